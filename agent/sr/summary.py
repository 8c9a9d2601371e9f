"""The one-page PDF summary of a response report, for viewers that do not render SR.

Vector text (searchable, ``pdftotext``-testable), drawn with reportlab only: a patient banner matching the
DICOM header, a lesion table (baseline, nadir, previous, current; sums; % change vs baseline and nadir), the
category under each criterion, the thresholds of the next category, the alerts by severity and a spider plot
of each target's % change from baseline over time. A pre-read says so in its title band and leaves the
current column pending. The output is byte-for-byte repeatable (reportlab's ``invariant`` mode, no clock).
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

from reportlab.graphics.shapes import Circle, Drawing, Line, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    FrameBreak,
    KeepInFrame,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from agent import __version__
from agent.response.model import Category, LesionKind
from agent.sr.report import (
    ResponseReport,
    category_text,
    criterion_explanation,
    criterion_name,
    criterion_summary,
    fmt_mm,
    fmt_pct,
    marker_status_lines,
    metabolic_lines,
    site_split_lines,
    sorted_alerts,
    table,
    threshold_text,
)
from agent.sr.values import iso_da

FONT = "LAVera"
FONT_BOLD = "LAVeraBd"
INK = colors.HexColor("#1f2933")
MUTED = colors.HexColor("#616e7c")
RULE = colors.HexColor("#cbd2d9")
BAND = colors.HexColor("#243b53")
ZEBRA = colors.HexColor("#f5f7fa")
SEVERITY_COLOURS = {
    "critical": colors.HexColor("#c62828"),
    "warning": colors.HexColor("#ef6c00"),
    "info": colors.HexColor("#1565c0"),
}
CATEGORY_COLOURS = {
    Category.PD: "#c62828",
    Category.ICPD: "#c62828",
    Category.IUPD: "#e65100",
    Category.PR: "#2e7d32",
    Category.IPR: "#2e7d32",
    Category.CR: "#1b5e20",
    Category.ICR: "#1b5e20",
    Category.OPTIMAL: "#2e7d32",
    Category.NE: "#8d6e00",
}
SERIES_COLOURS = [
    "#1565c0",
    "#c62828",
    "#2e7d32",
    "#6a1b9a",
    "#ef6c00",
    "#00838f",
    "#ad1457",
    "#4e342e",
    "#558b2f",
    "#283593",
]
PAGE = landscape(A4)
MARGIN = 12 * mm
HEADER_H = 30 * mm
FOOTER_H = 9 * mm


def _fonts() -> None:
    """Bitstream Vera (shipped with reportlab): embedded, so ≥, −, → and accented names print everywhere."""
    if FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(FONT, "Vera.ttf"))
        pdfmetrics.registerFont(TTFont(FONT_BOLD, "VeraBd.ttf"))


def _style(
    size: float = 8, bold: bool = False, colour: Any = INK, leading: float | None = None
) -> ParagraphStyle:
    return ParagraphStyle(
        "s",
        fontName=FONT_BOLD if bold else FONT,
        fontSize=size,
        leading=leading or size * 1.25,
        textColor=colour,
        alignment=TA_LEFT,
    )


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _person(name: str) -> str:
    """DICOM PN "Family^Given^Middle" -> "FAMILY, Given Middle"."""
    parts = name.split("=")[0].split("^")
    family = parts[0].strip().upper()
    given = " ".join(p.strip() for p in parts[1:3] if p.strip())
    return f"{family}, {given}" if given else family or "(no name)"


def _da(value: str | None) -> str:
    return iso_da(value) or "–"


def _nb(text: str) -> str:
    """Escaped, with non-breaking spaces: "21 mm" never wraps between the number and its unit."""
    return _esc(text).replace(" ", "&nbsp;")


def _minus(text: str) -> str:
    return text.replace("-", "\u2212")


def _section(title: str) -> Paragraph:
    return Paragraph(_esc(title).upper(), _style(7.5, bold=True, colour=MUTED))


# --------------------------------------------------------------------------------------------------------
# Page furniture


def _page(report: ResponseReport) -> Any:
    patient, study = report.patient, report.current

    def draw(canvas: Canvas, doc: Any) -> None:
        width, height = PAGE
        canvas.saveState()
        # Title band
        top = height - MARGIN
        canvas.setFillColor(BAND)
        canvas.rect(MARGIN, top - 11 * mm, width - 2 * MARGIN, 11 * mm, stroke=0, fill=1)
        canvas.setFillColor(colors.white)
        canvas.setFont(FONT_BOLD, 13)
        title = "Tumour response pre-read" if report.pre_read else "Tumour response summary"
        canvas.drawString(MARGIN + 4 * mm, top - 7.3 * mm, title)
        badge = "MACHINE-GENERATED · NOT VERIFIED BY A RADIOLOGIST"
        canvas.setFont(FONT_BOLD, 7.5)
        bw = canvas.stringWidth(badge, FONT_BOLD, 7.5) + 6 * mm
        canvas.setFillColor(colors.HexColor("#c62828"))
        canvas.roundRect(
            width - MARGIN - bw - 3 * mm, top - 8.6 * mm, bw, 6.2 * mm, 1.5 * mm, stroke=0, fill=1
        )
        canvas.setFillColor(colors.white)
        canvas.drawString(width - MARGIN - bw, top - 6.4 * mm, badge)
        if report.pre_read:
            pre = "PRE-READ: PRIOR MEASUREMENTS ONLY"
            pw = canvas.stringWidth(pre, FONT_BOLD, 7.5) + 6 * mm
            canvas.setFillColor(colors.HexColor("#ef6c00"))
            x = width - MARGIN - bw - pw - 6 * mm
            canvas.roundRect(x, top - 8.6 * mm, pw, 6.2 * mm, 1.5 * mm, stroke=0, fill=1)
            canvas.setFillColor(colors.white)
            canvas.drawString(x + 3 * mm, top - 6.4 * mm, pre)
        # Patient banner (as in the DICOM header)
        y = top - 17 * mm
        fields = [
            ("Patient", _person(patient.name)),
            ("Patient ID", patient.patient_id),
            ("Born", _da(patient.birth_date)),
            ("Sex", patient.sex or "–"),
            ("Study date", study.date.isoformat()),
            ("Accession", study.accession or "–"),
            ("Study", study.description or "–"),
        ]
        x = MARGIN + 1 * mm
        for label, value in fields:
            canvas.setFillColor(MUTED)
            canvas.setFont(FONT, 6.5)
            canvas.drawString(x, y + 3.6 * mm, label.upper())
            canvas.setFillColor(INK)
            canvas.setFont(FONT_BOLD, 9.5)
            text = value if len(value) <= 40 else value[:39] + "…"
            canvas.drawString(x, y, text)
            x += (
                max(canvas.stringWidth(text, FONT_BOLD, 9.5), canvas.stringWidth(label.upper(), FONT, 6.5))
                + 9 * mm
            )
        canvas.setStrokeColor(RULE)
        canvas.setLineWidth(0.6)
        canvas.line(MARGIN, y - 3 * mm, width - MARGIN, y - 3 * mm)
        # Context line
        ctx = report.timeline.context
        therapy = ", ".join(ctx.therapy) or "–"
        start = ctx.treatment_start.isoformat() if ctx.treatment_start else "–"
        line = (
            f"Primary {ctx.primary} · therapy {therapy} · treatment start {start} · "
            f"{len(report.studies)} measured studies, baseline {report.studies[0].date.isoformat()} · "
            f"report for {report.current_label} {study.date.isoformat()}"
        )
        canvas.setFillColor(MUTED)
        canvas.setFont(FONT, 7.5)
        canvas.drawString(MARGIN + 1 * mm, y - 7.5 * mm, line)
        # Footer
        canvas.setStrokeColor(RULE)
        canvas.line(MARGIN, MARGIN + 4 * mm, width - MARGIN, MARGIN + 4 * mm)
        canvas.setFont(FONT, 6.5)
        canvas.setFillColor(MUTED)
        canvas.drawString(
            MARGIN,
            MARGIN,
            f"liver-agent {__version__} · decision support, not a diagnosis: values and categories are "
            "computed from the measurements in the SRs and must be verified by the reading radiologist. "
            "Thresholds are inclusive; % rounded for display only.",
        )
        canvas.drawRightString(width - MARGIN, MARGIN, f"page {doc.page}")
        canvas.restoreState()

    return draw


# --------------------------------------------------------------------------------------------------------
# Tables


def _lesion_table(report: ResponseReport, width: float) -> Table:
    tab = table(report)
    head = ["Lesion", "Site"] + [f"{c.title}\n{c.date.isoformat()}" for c in tab.columns]
    data: list[list[Any]] = [head]
    kinds: list[LesionKind | None] = [None]
    cell = _style(7.5)
    value_style = ParagraphStyle("v", parent=_style(7.5, leading=8.6), alignment=TA_RIGHT)
    for row in tab.rows:
        site = row.organ.replace("_", " ") + (" (node, SA)" if row.is_node else "")
        name = Paragraph(f"<b>{row.label}</b>&nbsp; {_esc(row.name)}", cell)
        values = [
            Paragraph(
                (f'<font size="6" color="#616e7c">{_nb(note)}</font>&nbsp; ' if note else "") + _nb(main),
                value_style,
            )
            for main, note in row.cells
        ]
        data.append([name, Paragraph(_esc(site), cell), *values])
        kinds.append(row.kind)
    data.append(
        [
            "Sum of target diameters",
            "",
            *[
                fmt_mm(s) if c.index is not None else "pending"
                for c, s in zip(tab.columns, tab.sums, strict=True)
            ],
        ]
    )
    kinds.append(None)
    n_cols = len(head)
    if not report.pre_read:
        blank = [""] * (n_cols - 3)
        data.append(["Change vs baseline", "", *blank, _minus(fmt_pct(tab.change_vs_baseline_pct))])
        data.append(["Change vs nadir", "", *blank, _minus(fmt_pct(tab.change_vs_nadir_pct))])
    value_w = (width - 40 * mm - 20 * mm) / (n_cols - 2)
    t = Table(data, colWidths=[40 * mm, 20 * mm] + [value_w] * (n_cols - 2), repeatRows=1)
    first_sum = len(tab.rows) + 1
    style: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, -1), FONT, 7.5),
        ("FONT", (0, 0), (-1, 0), FONT_BOLD, 7),
        ("TEXTCOLOR", (0, 0), (-1, 0), MUTED),
        ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, INK),
        ("LINEABOVE", (0, first_sum), (-1, first_sum), 0.8, INK),
        ("FONT", (0, first_sum), (-1, -1), FONT_BOLD, 7.5),
        ("SPAN", (0, first_sum), (1, first_sum)),
        ("TOPPADDING", (0, 0), (-1, -1), 2.2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.2),
        ("BACKGROUND", (-1, 0), (-1, -1), colors.HexColor("#eef4fb")),
    ]
    for r in range(first_sum + 1, len(data)):
        style.append(("SPAN", (0, r), (1, r)))
    previous: LesionKind | None = None
    for r, kind in enumerate(kinds[1:first_sum], start=1):
        if r % 2 == 0:
            style.append(("BACKGROUND", (0, r), (-2, r), ZEBRA))
        if previous is not None and kind is not previous:
            style.append(("LINEABOVE", (0, r), (-1, r), 0.4, RULE))
        previous = kind
    t.setStyle(TableStyle(style))
    return t


def _attenuation(report: ResponseReport, width: float) -> list[Flowable]:
    """Each lesion's mean HU at each visit (a star where the agent measured it from the image)."""
    tab = table(report)
    tps = report.timeline.timepoints
    rows: list[list[Any]] = []
    starred = False
    for row in tab.rows:
        dicom = report.lesions.get(row.lesion_id)
        computed = {t for t, _ in dicom.hu_computed} if dicom is not None else set()
        cells = []
        for t, tp in enumerate(tps):
            record = next((les for les in tp.lesions if les.id == row.lesion_id), None)
            if record is None or record.mean_hu is None:
                cells.append("–")
                continue
            star = "*" if t in computed else ""
            starred = starred or bool(star)
            cells.append(_minus(f"{record.mean_hu.quantize(Decimal('1'))} HU{star}"))
        if any(c != "–" for c in cells):
            rows.append([f"{row.label} {row.name}", *cells])
    if not rows:
        return []
    head = ["Lesion"] + [f"{report.label(t)}\n{tp.date.isoformat()}" for t, tp in enumerate(tps)]
    value_w = (width - 40 * mm) / len(tps)
    t = Table([head, *rows], colWidths=[40 * mm] + [value_w] * len(tps), repeatRows=1)
    t.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, 7.5),
                ("FONT", (0, 0), (-1, 0), FONT_BOLD, 7),
                ("TEXTCOLOR", (0, 0), (-1, 0), MUTED),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, INK),
                ("TOPPADDING", (0, 0), (-1, -1), 2.2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.2),
            ]
        )
    )
    out: list[Flowable] = [_section("Mean attenuation per visit"), Spacer(0, 1.5 * mm), t]
    unknown = []
    for row in tab.rows:
        dicom = report.lesions.get(row.lesion_id)
        unknown += [f"{row.label} {report.label(i)}" for i, _ in (dicom.phase_unknown if dicom else ())]
    if unknown:
        text = f"Contrast phase unknown (not in the images' descriptions or timing): {', '.join(unknown)}."
        out += [Spacer(0, 1 * mm), Paragraph(_esc(text), _style(6.5))]
    if starred:
        note = (
            "* mean HU computed by liver-agent from the referenced CT image (inside the drawn region, else "
            "the ellipse spanned by the measured axes); the SR gave none. An SR's own value is always used."
        )
        out += [Spacer(0, 1 * mm), Paragraph(_esc(note), _style(6.5))]
    return [*out, Spacer(0, 4 * mm)]


def _category_cell(category: Category | None, bold: bool = False) -> Paragraph:
    text = category_text(category)
    colour = CATEGORY_COLOURS.get(category) if category is not None else None
    weight = "<b>%s</b>" if bold or colour else "%s"
    inner = weight % _esc(text)
    if colour:
        inner = f'<font color="{colour}">{inner}</font>'
    return Paragraph(inner, _style(8))


def _response_table(report: ResponseReport, width: float) -> Table:
    current = report.current_index
    head = [
        "Criterion",
        "Current" if not report.pre_read else "Last",
        "Target",
        "Non-target",
        "New lesion",
        "BOR",
    ]
    data: list[list[Any]] = [head]
    for result in report.assessment.results:
        if current is not None and current > 0:
            tp = result.timepoints[current]
        else:
            tp = next((x for x in reversed(result.timepoints) if x is not None), None)
        name = criterion_name(result.criterion)
        if not result.applicable:
            data.append([name, _category_cell(Category.NA), "–", "–", "–", "–"])
            continue
        if tp is None:
            data.append(
                [
                    name,
                    Paragraph("baseline", _style(8, colour=MUTED)),
                    "–",
                    "–",
                    "–",
                    _category_cell(result.bor),
                ]
            )
            continue
        target = category_text(tp.target) if tp.target is not Category.NONE else "none"
        non_target = category_text(tp.non_target) if tp.non_target is not Category.NONE else "none"
        data.append(
            [
                name,
                _category_cell(tp.category, bold=True),
                target,
                non_target,
                "yes" if tp.new_lesion else "no",
                _category_cell(result.bor),
            ]
        )
    w = [28 * mm, 24 * mm]
    rest = (width - sum(w)) / 4
    t = Table(data, colWidths=w + [rest] * 4, repeatRows=1)
    t.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, 8),
                ("FONT", (0, 0), (-1, 0), FONT_BOLD, 7),
                ("FONT", (0, 1), (0, -1), FONT_BOLD, 8),
                ("TEXTCOLOR", (0, 0), (-1, 0), MUTED),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, INK),
                ("LINEBELOW", (0, 1), (-1, -1), 0.3, RULE),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("TOPPADDING", (0, 0), (-1, -1), 2.2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.2),
            ]
        )
    )
    return t


def _thresholds(report: ResponseReport) -> list[Flowable]:
    out: list[Flowable] = []
    read = "current read" if report.pre_read else "next read"
    for result in report.assessment.results:
        ts = result.next_thresholds
        if not ts:
            continue
        name = criterion_name(result.criterion)
        text = "; ".join(_esc(threshold_text(t)).replace("&gt;=", "≥").replace("&lt;=", "≤") for t in ts)
        out.append(Paragraph(f"<b>{name}</b>, {read}: {text}", _style(8, leading=10.5)))
    if not out:
        out.append(Paragraph("No threshold: no target lesion at baseline.", _style(8, colour=MUTED)))
    box = Table([[p] for p in out], colWidths=[None])
    box.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fff8e1")),
                ("LINEBEFORE", (0, 0), (0, -1), 2.2, colors.HexColor("#f9a825")),
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 1.6),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.6),
            ]
        )
    )
    return [box]


def _rules(report: ResponseReport) -> list[Flowable]:
    """Per criterion: the rule sentence, then the figures behind it (reference, sums, density per lesion,
    Chun groups, iRECIST state), so a radiologist can check the category (docs/criteria.md §1.7)."""
    out: list[Flowable] = []
    for r in report.assessment.results:
        out.append(Paragraph(_esc(criterion_summary(report, r)), _style(6.8, colour=MUTED, leading=8.6)))
        for line in criterion_explanation(report, r):
            if line.startswith("Rule: "):
                continue  # the sentence above already names the rule
            out.append(Paragraph(_esc(line), _style(6.4, colour=MUTED, leading=8.0), bulletText="\u2013"))
    split = site_split_lines(report)
    if split:
        out.append(
            Paragraph(
                "By site (each against its own baseline and nadir; the overall response stands)",
                _style(6.8, colour=MUTED, leading=8.6),
            )
        )
        for line in split:
            out.append(Paragraph(_esc(line), _style(6.4, colour=MUTED, leading=8.0), bulletText="\u2013"))
    return out


def _alerts(report: ResponseReport, width: float) -> list[Flowable]:
    alerts = sorted_alerts(report)
    if not alerts:
        return [Paragraph("No alert.", _style(8, colour=MUTED))]
    rows: list[list[Any]] = []
    style: list[tuple[Any, ...]] = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2.4),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2.6),
        ("LEFTPADDING", (0, 0), (0, -1), 4),
        ("LINEBELOW", (0, 0), (-1, -1), 0.3, RULE),
    ]
    for i, a in enumerate(alerts):
        colour = SEVERITY_COLOURS.get(a.severity.value, MUTED)
        hex_colour = colour.hexval()[2:] if hasattr(colour, "hexval") else "616e7c"
        badge = Paragraph(
            f'<font color="#{hex_colour}"><b>{a.severity.value.upper()}</b></font>', _style(6.3, leading=8)
        )
        where = "" if a.timepoint is None else f"  ·  {report.label(a.timepoint)}"
        body = Paragraph(
            f"<b>{_esc(a.code)}</b><font color='#616e7c'>{where}</font><br/>{_esc(a.message)}",
            _style(6.9, leading=8.4),
        )
        rows.append([badge, body])
        style.append(("LINEBEFORE", (0, i), (0, i), 2.2, colour))
        style.append(("BACKGROUND", (0, i), (-1, i), colors.HexColor("#fafbfc")))
    t = Table(rows, colWidths=[16 * mm, width - 16 * mm])
    t.setStyle(TableStyle(style))
    return [t]


# --------------------------------------------------------------------------------------------------------
# Spider plot


def _spread(
    labels: list[tuple[float, float, str, Any, bool]], gap: float, low: float, high: float
) -> list[tuple[float, float, str, Any, bool]]:
    """Line-end labels moved apart vertically (at least ``gap``), as close to their lines as possible."""
    ordered = sorted(labels, key=lambda item: -item[1])
    ys = [item[1] for item in ordered]
    for _ in range(50):
        moved = False
        for i in range(1, len(ys)):
            overlap = gap - (ys[i - 1] - ys[i])
            if overlap > 0.01:
                ys[i - 1] += overlap / 2
                ys[i] -= overlap / 2
                moved = True
        if ys:
            shift = max(0.0, low - ys[-1]) - max(0.0, ys[0] - (high - gap / 2))
            ys = [v + shift for v in ys]
        if not moved:
            break
    return [(lx, ny, text, colour, bold) for (lx, _, text, colour, bold), ny in zip(ordered, ys, strict=True)]


def _spider(report: ResponseReport, width: float, height: float) -> Drawing:
    """Per-target % change of the diameter from baseline over time, with the sum, PR and PD lines."""
    tab = table(report)
    tl = report.timeline
    b = tl.baseline_index
    days = [(tp.date - tl.timepoints[b].date).days for tp in tl.timepoints]
    series: list[tuple[str, list[tuple[int, Decimal]], bool]] = []
    for row in tab.rows:
        if row.kind is not LesionKind.TARGET:
            continue
        base = row.numbers[b]
        if not base:
            continue
        numbers = list(enumerate(row.numbers))[b:]
        pts = [(days[i], (v - base) * 100 / base) for i, v in numbers if v is not None]
        series.append((row.label, pts, False))
    base_sum = tab.sums_by_timepoint[b]
    if base_sum:
        pts = [
            (days[i], (s - base_sum) * 100 / base_sum)
            for i, s in enumerate(tab.sums_by_timepoint)
            if s is not None
        ]
        series.append(("Sum", pts, True))
    d = Drawing(width, height)
    left, right, bottom, top = 30, 34, 26, 10
    pw, ph = width - left - right, height - bottom - top
    values = [float(v) for _, pts, _ in series for _, v in pts] + [20.0, -30.0]
    lo = min(-40.0, min(values) - 5)
    hi = max(30.0, max(values) + 5)
    lo, hi = 10 * (lo // 10), 10 * (-(-hi // 10))
    max_day = max(days[-1], 1)
    if report.pre_read:
        max_day = max(max_day, (report.current.date - tl.timepoints[0].date).days)

    def x(day: float) -> float:
        return left + pw * day / max_day

    def y(pct: float) -> float:
        return bottom + ph * (pct - lo) / (hi - lo)

    d.add(Rect(left, bottom, pw, ph, fillColor=colors.HexColor("#fbfcfd"), strokeColor=RULE, strokeWidth=0.5))
    step = 20 if hi - lo <= 160 else 50
    tick = int(lo) - int(lo) % step
    while tick <= hi:
        if tick >= lo:
            d.add(
                Line(
                    left, y(tick), left + pw, y(tick), strokeColor=colors.HexColor("#e4e7eb"), strokeWidth=0.4
                )
            )
            d.add(
                String(
                    left - 3,
                    y(tick) - 2.5,
                    f"{tick:+d}%" if tick else "0",
                    fontName=FONT,
                    fontSize=6,
                    fillColor=MUTED,
                    textAnchor="end",
                )
            )
        tick += step
    for level, label, colour in ((20.0, "PD +20%", "#c62828"), (-30.0, "PR −30%", "#2e7d32")):
        d.add(
            Line(
                left,
                y(level),
                left + pw,
                y(level),
                strokeColor=colors.HexColor(colour),
                strokeWidth=0.7,
                strokeDashArray=[3, 2],
            )
        )
        d.add(
            String(
                left + 3,
                y(level) + 2,
                label,
                fontName=FONT,
                fontSize=5.8,
                fillColor=colors.HexColor(colour),
            )
        )
    d.add(Line(left, y(0), left + pw, y(0), strokeColor=MUTED, strokeWidth=0.6))
    for i, day in enumerate(days):
        d.add(Line(x(day), bottom, x(day), bottom - 2, strokeColor=MUTED, strokeWidth=0.5))
        d.add(
            String(
                x(day),
                bottom - 9,
                report.label(i),
                fontName=FONT_BOLD,
                fontSize=6,
                fillColor=INK,
                textAnchor="middle",
            )
        )
        d.add(
            String(
                x(day),
                bottom - 16,
                f"day {day}",
                fontName=FONT,
                fontSize=5.5,
                fillColor=MUTED,
                textAnchor="middle",
            )
        )
    if report.pre_read:
        cd = (report.current.date - tl.timepoints[0].date).days
        d.add(
            Line(
                x(cd),
                bottom,
                x(cd),
                bottom + ph,
                strokeColor=colors.HexColor("#ef6c00"),
                strokeWidth=0.6,
                strokeDashArray=[1, 2],
            )
        )
        d.add(
            String(
                x(cd),
                bottom - 9,
                report.current_label + " (now)",
                fontName=FONT_BOLD,
                fontSize=6,
                fillColor=colors.HexColor("#ef6c00"),
                textAnchor="middle",
            )
        )
    labels: list[tuple[float, float, str, Any, bool]] = []  # x, wanted y, text, colour, bold
    for k, (label, pts, is_sum) in enumerate(series):
        colour = INK if is_sum else colors.HexColor(SERIES_COLOURS[k % len(SERIES_COLOURS)])
        coords: list[float] = []
        for day, pct in pts:
            coords += [x(day), y(float(pct))]
        if len(coords) >= 4:
            d.add(PolyLine(coords, strokeColor=colour, strokeWidth=1.8 if is_sum else 1.0))
        for day, pct in pts:
            d.add(
                Circle(
                    x(day),
                    y(float(pct)),
                    1.9 if is_sum else 1.4,
                    fillColor=colour,
                    strokeColor=colors.white,
                    strokeWidth=0.3,
                )
            )
        if pts:
            labels.append((x(pts[-1][0]) + 4, y(float(pts[-1][1])) - 2, label, colour, is_sum))
    for lx, ly, text, colour, bold in _spread(labels, gap=6.6, low=bottom, high=bottom + ph):
        d.add(String(lx, ly, text, fontName=FONT_BOLD if bold else FONT, fontSize=6, fillColor=colour))
    d.add(
        String(
            left,
            height - 7,
            "% change from baseline (target diameters; nodes: short axis)",
            fontName=FONT,
            fontSize=6.5,
            fillColor=MUTED,
        )
    )
    return d


# --------------------------------------------------------------------------------------------------------
# Tumour marker curve (docs/criteria.md §13.2)


def _marker_curve(report: ResponseReport, width: float, height: float) -> Drawing | None:
    """Each tumour marker over time on the scans' day axis (day 0 = baseline scan): the values with the
    unit and the upper limit of normal when there is one marker, else each as % of its first value."""
    markers = [m for m in report.assessment.markers if m.results]
    if not markers:
        return None
    tl = report.timeline
    day0 = tl.timepoints[tl.baseline_index].date
    scan_days = [(tp.date - day0).days for tp in tl.timepoints]
    single = len(markers) == 1
    series: list[tuple[str, list[tuple[int, float]]]] = []
    for m in markers:
        first = float(m.results[0].value) or 1.0
        pts = [
            ((r.date - day0).days, float(r.value) if single else 100 * float(r.value) / first)
            for r in m.results
        ]
        series.append((m.marker.value, pts))
    all_days = scan_days + [day for _, pts in series for day, _ in pts]
    d0, d1 = min([*all_days, 0]), max([*all_days, 1])
    uln = markers[0].results[-1].upper_limit if single else None
    values = [v for _, pts in series for _, v in pts] + ([float(uln)] if uln is not None else [])
    lo, hi = 0.0, max(values) * 1.15 or 1.0
    d = Drawing(width, height)
    left, right, bottom, top = 30, 34, 18, 12
    pw, ph = width - left - right, height - bottom - top

    def x(day: float) -> float:
        return left + pw * (day - d0) / max(d1 - d0, 1)

    def y(v: float) -> float:
        return bottom + ph * (v - lo) / (hi - lo)

    d.add(Rect(left, bottom, pw, ph, fillColor=colors.HexColor("#fbfcfd"), strokeColor=RULE, strokeWidth=0.5))
    for frac in (0.0, 0.5, 1.0):
        v = lo + (hi - lo) * frac
        d.add(
            String(
                left - 3, y(v) - 2.5, f"{v:.3g}", fontName=FONT, fontSize=6, fillColor=MUTED, textAnchor="end"
            )
        )
    if uln is not None:
        d.add(
            Line(
                left,
                y(float(uln)),
                left + pw,
                y(float(uln)),
                strokeColor=colors.HexColor("#c62828"),
                strokeWidth=0.7,
                strokeDashArray=[3, 2],
            )
        )
        d.add(
            String(
                left + 3,
                y(float(uln)) + 2,
                f"ULN {float(uln):g}",
                fontName=FONT,
                fontSize=5.8,
                fillColor=colors.HexColor("#c62828"),
            )
        )
    for i, day in enumerate(scan_days):
        d.add(
            Line(x(day), bottom, x(day), bottom + ph, strokeColor=colors.HexColor("#e4e7eb"), strokeWidth=0.4)
        )
        d.add(
            String(
                x(day),
                bottom - 9,
                report.label(i),
                fontName=FONT_BOLD,
                fontSize=6,
                fillColor=INK,
                textAnchor="middle",
            )
        )
    for k, (name, pts) in enumerate(series):
        colour = colors.HexColor(SERIES_COLOURS[k % len(SERIES_COLOURS)])
        coords = [c for day, v in pts for c in (x(day), y(v))]
        if len(coords) >= 4:
            d.add(PolyLine(coords, strokeColor=colour, strokeWidth=1.4))
        for day, v in pts:
            d.add(Circle(x(day), y(v), 1.6, fillColor=colour, strokeColor=colors.white, strokeWidth=0.3))
        last_day, last_v = pts[-1]
        d.add(String(x(last_day) + 4, y(last_v) - 2, name, fontName=FONT_BOLD, fontSize=6, fillColor=colour))
    unit = markers[0].unit if single else "% of the first value"
    title = f"{markers[0].marker.value} ({unit})" if single else f"Tumour markers ({unit})"
    d.add(String(left, height - 8, title, fontName=FONT, fontSize=6.5, fillColor=MUTED))
    return d


def _markers(report: ResponseReport, width: float) -> list[Flowable]:
    """The marker curve under the spider plot, each marker's status at the current time point, then the
    metabolic response of the PETs."""
    out: list[Flowable] = []
    curve = _marker_curve(report, width, 40 * mm)
    if curve is not None:
        out += [Spacer(0, 3 * mm), _section("Tumour markers"), Spacer(0, 1 * mm), curve]
        for line in marker_status_lines(report):
            out.append(Paragraph(_esc(line), _style(6.4, colour=MUTED, leading=8.0), bulletText="\u2013"))
    pet = metabolic_lines(report)
    if pet:
        out += [Spacer(0, 3 * mm), _section("PET metabolic response"), Spacer(0, 1 * mm)]
        for line in pet:
            out.append(Paragraph(_esc(line), _style(6.4, colour=MUTED, leading=8.0), bulletText="\u2013"))
    return out


# --------------------------------------------------------------------------------------------------------


def render_pdf(report: ResponseReport) -> bytes:
    """The summary page(s) as PDF bytes (deterministic)."""
    _fonts()
    buf = io.BytesIO()
    width, height = PAGE
    body_top = height - MARGIN - HEADER_H
    body_h = body_top - MARGIN - FOOTER_H
    gap = 8 * mm
    left_w = (width - 2 * MARGIN - gap) * 0.6
    right_w = width - 2 * MARGIN - gap - left_w
    frames = [
        Frame(
            MARGIN, MARGIN + FOOTER_H, left_w, body_h, id="left", leftPadding=0, rightPadding=0, topPadding=0
        ),
        Frame(
            MARGIN + left_w + gap,
            MARGIN + FOOTER_H,
            right_w,
            body_h,
            id="right",
            leftPadding=0,
            rightPadding=0,
            topPadding=0,
        ),
    ]
    doc = BaseDocTemplate(
        buf,
        pagesize=PAGE,
        invariant=1,
        title="Tumour response summary" + (" (pre-read)" if report.pre_read else ""),
        author=f"liver-agent {__version__}",
        subject="Machine-generated tumour response summary; not verified by a radiologist",
        creator=f"liver-agent {__version__}",
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN,
    )
    doc.addPageTemplates([PageTemplate(id="summary", frames=frames, onPage=_page(report))])
    left: list[Flowable] = [
        _section("Lesions"),
        Spacer(0, 1.5 * mm),
        _lesion_table(report, left_w),
        Spacer(0, 5 * mm),
        *_attenuation(report, left_w),
        _section("Response by criterion" + (" (last prior time point)" if report.pre_read else "")),
        Spacer(0, 1.5 * mm),
        _response_table(report, left_w),
        Spacer(0, 4 * mm),
        _section("Thresholds for the " + ("current read" if report.pre_read else "next read")),
        Spacer(0, 1.5 * mm),
        *_thresholds(report),
        Spacer(0, 3 * mm),
        *_rules(report),
    ]
    right: list[Flowable] = [
        _section("Spider plot"),
        Spacer(0, 1 * mm),
        _spider(report, right_w, 56 * mm),
        *_markers(report, right_w),
        Spacer(0, 4 * mm),
        _section(f"Alerts ({len(report.assessment.alerts)})"),
        Spacer(0, 1.5 * mm),
        *_alerts(report, right_w),
    ]
    # Each column shrinks to fit its frame, so one column never pushes the other onto a second page.
    story: list[Flowable] = [
        KeepInFrame(left_w, body_h, left, mode="shrink"),
        FrameBreak(),
        KeepInFrame(right_w, body_h, right, mode="shrink"),
    ]
    doc.build(story)
    return buf.getvalue()
