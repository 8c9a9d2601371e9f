"""Page data built from a stored result: the lesion table, categories per criterion, thresholds and the
spider plot (inline SVG). Pure functions over the Assessment and timeline JSON; no database, no HTML files."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date
from html import escape
from typing import Any

from agent.alerts.results import CRITERION_LABELS, StoredResult
from agent.response.parse import explanation_lines, marker_lines, site_lines

CATEGORY_TONE = {
    "CR": "good", "PR": "good", "iCR": "good", "iPR": "good", "optimal": "good",
    "SD": "neutral", "iSD": "neutral", "NON_CR_NON_PD": "neutral", "incomplete": "neutral",
    "PD": "bad", "iUPD": "bad", "iCPD": "bad", "none": "bad",
}  # fmt: skip

PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7c86", "#57606a")


@dataclass
class LesionRow:
    id: str
    organ: str
    kind: str
    values: list[str] = field(default_factory=list)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        value = f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value}{unit}"


def timepoint_dates(result: StoredResult) -> list[str]:
    tl = result.timeline or {}
    return [str(tp.get("date", "")) for tp in tl.get("timepoints", [])]


def timepoint_labels(result: StoredResult) -> list[str]:
    """Column titles: "Baseline" at the chosen baseline, "Pre-treatment" before it, "TP n" after it."""
    n = len(timepoint_dates(result))
    roles: list[str] = []
    for key in result.criteria():
        roles = list(result.assessment[key].get("timepoint_roles") or [])
        if roles:
            break
    base = roles.index("baseline") if "baseline" in roles else 0
    return ["Baseline" if i == base else "Pre-treatment" if i < base else f"TP {i - base}" for i in range(n)]


def lesion_table(result: StoredResult) -> list[LesionRow]:
    """One row per lesion id in timeline order; a cell per time point: axis (and HU) or its status."""
    tl = result.timeline or {}
    tps = tl.get("timepoints", [])
    rows: dict[str, LesionRow] = {}
    for tp in tps:
        for les in tp.get("lesions", []):
            lid = str(les.get("id", "?"))
            if lid not in rows:
                organ, kind = str(les.get("organ", "")), str(les.get("kind", ""))
                rows[lid] = LesionRow(lid, organ, kind, ["—"] * len(tps))
    for i, tp in enumerate(tps):
        for les in tp.get("lesions", []):
            row = rows[str(les.get("id", "?"))]
            axis = les.get("short_axis_mm") if les.get("is_node") else les.get("long_axis_mm")
            text = _fmt(axis, " mm") if axis is not None else str(les.get("status") or "—")
            if les.get("mean_hu") is not None:
                text += f" · {_fmt(les.get('mean_hu'))} HU"
            row.values[i] = text
    return list(rows.values())


_CONTEXT_NOTES = ("contrast phase unknown", "mean HU computed", "mean HU not measured", "the measured image")


def context_notes(result: StoredResult) -> list[str]:
    """What the acquisition context could not tell, and how each mean HU the SRs lacked was obtained:
    "FU1 2024-03-20, L1: contrast phase unknown: ..." (one line per lesion and time point)."""
    tl = result.timeline or {}
    out: list[str] = []
    for i, tp in enumerate(tl.get("timepoints", [])):
        label = "BL" if i == 0 else f"FU{i}"
        for les in tp.get("lesions", []):
            for note in les.get("notes", []) or []:
                if isinstance(note, str) and note.startswith(_CONTEXT_NOTES):
                    out.append(f"{label} {tp.get('date', '')}, {les.get('id', '?')}: {note}")
    return list(dict.fromkeys(out))


def criteria_table(result: StoredResult) -> list[dict[str, Any]]:
    out = []
    for key in result.criteria():
        block = result.assessment[key]
        out.append(
            {
                "key": key,
                "label": CRITERION_LABELS.get(key, key),
                "responses": block.get("timepoint_responses", []),
                "sums": block.get("target_sums_mm", []),
                "change_baseline": block.get("change_vs_baseline_pct", []),
                "change_nadir": block.get("change_vs_nadir_pct", []),
                "bor": block.get("bor"),
                "current": result.category(key),
                **_why(block, result.timepoint),
            }
        )
    return out


def _why(block: dict[str, Any], timepoint: int | None) -> dict[str, Any]:
    """The latest follow-up's explanation: its label and the sentences behind its category (rule and
    citation, reference with date and label, sums and % changes, density, per-lesion figures, iRECIST
    state); empty for results stored before explanations existed."""
    entries = block.get("explanations") or []
    at = entries[timepoint] if timepoint is not None and 0 <= timepoint < len(entries) else None
    explained = [e for e in entries if e]
    if at is None and not explained:
        return {"why_label": None, "why": []}
    last = at or explained[-1]
    return {
        "why_label": f"{last.get('label') or ''} {last.get('date') or ''}".strip(),
        "why": explanation_lines(last),
    }


def _split_at(result: StoredResult) -> dict[str, Any] | None:
    entries = result.assessment.get("sites")
    tp = result.timepoint
    if not isinstance(entries, list) or tp is None or not 0 <= tp < len(entries):
        return None
    entry = entries[tp]
    return entry if isinstance(entry, dict) else None


def site_split(result: StoredResult) -> list[str]:
    """The study's time point split by site (docs/criteria.md §13.1) as sentences."""
    return site_lines(_split_at(result))


def site_summary(result: StoredResult) -> str | None:
    """Worklist cell: ``Liver +34.8 % PD · Extrahepatic -32.0 % PR`` (% vs each site's own nadir when it
    progresses, else vs its baseline)."""
    split = _split_at(result)
    if not split:
        return None
    parts = []
    names = {"liver": "Liver", "extrahepatic": "Extrahepatic"}
    for site, entry in (split.get("targets") or {}).items():
        category = entry.get("category")
        if not category:
            continue
        pct = entry.get("change_vs_nadir_pct") if category == "PD" else entry.get("change_vs_baseline_pct")
        shown = "n/a" if pct is None else f"{pct:+.1f} %"
        parts.append(f"{names.get(site, site)} {shown} {category}")
    return " · ".join(parts) or None


def thresholds(result: StoredResult) -> list[dict[str, Any]]:
    out = []
    for key in result.criteria():
        for t in result.assessment[key].get("next_thresholds", []) or []:
            out.append({"criterion": CRITERION_LABELS.get(key, key), **t})
    return out


def _days(d0: str, d: str) -> int | None:
    try:
        return (date.fromisoformat(d) - date.fromisoformat(d0)).days
    except ValueError:
        return None


def spider_series(result: StoredResult) -> list[tuple[str, list[tuple[int, float]]]]:
    """Per target lesion: (days since baseline, % change of its axis vs baseline) at each time point."""
    tl = result.timeline or {}
    tps = tl.get("timepoints", [])
    if not tps:
        return []
    d0 = str(tps[0].get("date", ""))
    base: dict[str, float] = {}
    for les in tps[0].get("lesions", []):
        if les.get("kind") == "target":
            axis = les.get("short_axis_mm") if les.get("is_node") else les.get("long_axis_mm")
            if isinstance(axis, int | float) and axis > 0:
                base[str(les["id"])] = float(axis)
    series: dict[str, list[tuple[int, float]]] = {lid: [(0, 0.0)] for lid in base}
    for tp in tps[1:]:
        day = _days(d0, str(tp.get("date", "")))
        if day is None:
            continue
        for les in tp.get("lesions", []):
            lid = str(les.get("id"))
            if lid not in base:
                continue
            axis = les.get("short_axis_mm") if les.get("is_node") else les.get("long_axis_mm")
            if isinstance(axis, int | float):
                series[lid].append((day, 100.0 * (float(axis) - base[lid]) / base[lid]))
    return sorted(series.items())


def spider_svg(result: StoredResult, width: int = 640, height: int = 300) -> str:
    """Spider plot of the target lesions as inline SVG, with the RECIST +20 % and -30 % lines."""
    series = spider_series(result)
    if not series:
        return '<p class="muted">No target lesion measured at baseline: no spider plot.</p>'
    left, right, top, bottom = 56, 96, 16, 40
    max_day = max([d for _, pts in series for d, _ in pts] + [1])
    values = [v for _, pts in series for _, v in pts]
    lo = min(-40.0, min(values) - 10)
    hi = max(30.0, max(values) + 10)

    def x(day: float) -> float:
        return left + (width - left - right) * day / max_day

    def y(v: float) -> float:
        return top + (height - top - bottom) * (hi - v) / (hi - lo)

    parts = [
        f'<svg class="spider" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Spider plot: change of each target lesion from baseline" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    step = 20 if hi - lo <= 160 else 50
    tick = int(lo // step * step)
    while tick <= hi:
        if tick >= lo:
            parts.append(
                f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" class="grid"/>'
                f'<text x="{left - 8}" y="{y(tick) + 4:.1f}" class="tick" text-anchor="end">{tick:+d}%</text>'
            )
        tick += step
    for ref, label in ((20.0, "PD +20%"), (-30.0, "PR −30%")):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(ref):.1f}" y2="{y(ref):.1f}" class="ref"/>'
            f'<text x="{left + 6}" y="{y(ref) - 4:.1f}" class="ref-label">{label}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" class="zero"/>'
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" class="axis" text-anchor="middle">'
        "Days since baseline</text>"
    )
    for day in sorted({d for _, pts in series for d, _ in pts}):
        parts.append(
            f'<text x="{x(day):.1f}" y="{height - bottom + 16}" class="tick" '
            f'text-anchor="middle">{day}</text>'
        )
    # End labels, nudged apart so that close lines stay readable.
    label_y: dict[str, float] = {}
    last = -1e9
    for lid, pts in sorted(series, key=lambda item: y(item[1][-1][1])):
        last = max(y(pts[-1][1]) + 4, last + 13)
        label_y[lid] = last
    for i, (lid, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for d, v in pts:
            parts.append(
                f'<circle cx="{x(d):.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}">'
                f"<title>{escape(lid)}: day {d}, {v:+.1f}%</title></circle>"
            )
        end_x = x(pts[-1][0]) + 8
        parts.append(
            f'<text x="{end_x:.1f}" y="{label_y[lid]:.1f}" class="series" fill="{color}">{escape(lid)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def marker_svg(result: StoredResult, width: int = 640, height: int = 180) -> str:
    """The tumour marker curve under the spider plot (docs/criteria.md §13.2): one marker in its unit with
    the upper limit of normal, several as % of their first value; scans as vertical lines. Empty string when
    the patient has no marker result."""
    markers = [m for m in result.assessment.get("markers") or [] if isinstance(m, dict) and m.get("results")]
    dates = timepoint_dates(result)
    if not markers or not dates or not dates[0]:
        return ""
    day0 = date.fromisoformat(dates[0][:10])
    single = len(markers) == 1
    series: list[tuple[str, list[tuple[int, float]]]] = []
    for m in markers:
        first = float(m["results"][0]["value"]) or 1.0
        pts = [
            (
                (date.fromisoformat(r["date"]) - day0).days,
                float(r["value"]) if single else 100 * float(r["value"]) / first,
            )
            for r in m["results"]
        ]
        series.append((str(m.get("marker")), pts))
    scan_days = [(date.fromisoformat(d[:10]) - day0).days for d in dates if d]
    days = scan_days + [d for _, pts in series for d, _ in pts]
    d0, d1 = min([*days, 0]), max([*days, 1])
    uln = markers[0]["results"][-1].get("upper_limit") if single else None
    values = [v for _, pts in series for _, v in pts] + ([float(uln)] if uln is not None else [])
    hi = max(values) * 1.15 or 1.0
    left, right, top, bottom = 56, 96, 20, 30

    def x(day: float) -> float:
        return left + (width - left - right) * (day - d0) / max(d1 - d0, 1)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (hi - v) / hi

    unit = str(markers[0].get("unit")) if single else "% of the first value"
    title = f"{markers[0].get('marker')} ({unit})" if single else f"Tumour markers ({unit})"
    parts = [
        f'<svg class="markers" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="12" class="axis">{escape(title)}</text>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = hi * frac
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{left - 8}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{v:.3g}</text>'
        )
    if uln is not None:
        yu = y(float(uln))
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{yu:.1f}" y2="{yu:.1f}" class="ref"/>'
            f'<text x="{left + 6}" y="{yu - 4:.1f}" class="ref-label">ULN {float(uln):g}</text>'
        )
    for label, day in zip(timepoint_labels(result), scan_days, strict=False):
        parts.append(
            f'<line x1="{x(day):.1f}" x2="{x(day):.1f}" y1="{top}" y2="{height - bottom}" class="grid"/>'
            f'<text x="{x(day):.1f}" y="{height - bottom + 14}" class="tick" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    for i, (name, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for d, v in pts:
            parts.append(
                f'<circle cx="{x(d):.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}">'
                f"<title>{escape(name)}: day {d}, {v:g}</title></circle>"
            )
        parts.append(
            f'<text x="{x(pts[-1][0]) + 8:.1f}" y="{y(pts[-1][1]) + 4:.1f}" class="series" fill="{color}">'
            f"{escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def marker_status(result: StoredResult) -> list[str]:
    """Each marker's category at the study's time point, as sentences."""
    markers = result.assessment.get("markers")
    return marker_lines(markers, result.timepoint) if isinstance(markers, list) else []


def metabolic_status(result: StoredResult) -> list[str]:
    """The metabolic response of each follow-up PET (docs/criteria.md §13.3), as sentences."""
    entries = result.assessment.get("metabolic")
    if not isinstance(entries, list):
        return []
    return [
        f"PET {e.get('date')}: {e.get('category')} by {e.get('method')} ({e.get('rule')})."
        + (f" {e['fallback']}." if e.get("fallback") else "")
        for e in entries
        if isinstance(e, dict)
    ]


CSV_COLUMNS = (
    "criterion", "timepoint", "date", "response", "target_response", "non_target_response",
    "target_sum_mm", "nadir_sum_mm", "change_vs_baseline_pct", "change_vs_nadir_pct", "bor",
)  # fmt: skip


def response_csv(result: StoredResult) -> str:
    """One row per criterion and time point (the baseline included)."""
    dates = timepoint_dates(result)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for key in result.criteria():
        block = result.assessment[key]
        n = len(block.get("timepoint_responses", []))

        def at(name: str, i: int, block: dict[str, Any] = block) -> Any:
            values = block.get(name) or []
            v = values[i] if i < len(values) else None
            return "" if v is None else v

        for i in range(n):
            w.writerow(
                [
                    CRITERION_LABELS.get(key, key), i, dates[i] if i < len(dates) else "",
                    at("timepoint_responses", i), at("target_responses", i), at("non_target_responses", i),
                    at("target_sums_mm", i), at("nadir_sums_mm", i), at("change_vs_baseline_pct", i),
                    at("change_vs_nadir_pct", i), block.get("bor", ""),
                ]
            )  # fmt: skip
    return buf.getvalue()


def pairing_table(result: StoredResult) -> dict[str, Any]:
    """The lesion pairings the result rests on (proposed or confirmed), each with the earlier lesions it
    could be paired with: the study page's pairing panel."""
    timeline = result.timeline or {}
    timepoints = timeline.get("timepoints") or []
    rows = []
    for p in timeline.get("pairings") or []:
        t = int(p.get("timepoint") or 0)
        earlier = sorted({str(les.get("id")) for tp in timepoints[:t] for les in tp.get("lesions") or []})
        source = p.get("source") or {}
        rows.append(
            {
                "lesion": p.get("lesion") or "(no label)",
                "diameter": _fmt(p.get("diameter_mm"), " mm"),
                "date": p.get("date") or "",
                "paired_with": p.get("paired_with"),
                "status": p.get("status"),
                "basis": "; ".join(p.get("basis") or []),
                "sr_sop_uid": source.get("sop_instance_uid") or "",
                "tracking_uid": source.get("tracking_uid") or "",
                "choices": earlier,
            }
        )
    # Earlier lesions the study does not measure: the radiologist may call them absent or not assessed.
    missing: list[str] = []
    at = result.timepoint
    if at is not None and 0 < at < len(timepoints):
        here = {str(les.get("id")) for les in timepoints[at].get("lesions") or []}
        before = {str(les.get("id")) for tp in timepoints[:at] for les in tp.get("lesions") or []}
        missing = sorted(before - here)
    return {"provisional": bool(timeline.get("provisional")), "rows": rows, "missing": missing}
