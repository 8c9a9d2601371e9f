"""What a response report says, before it is laid out as DICOM SR (``write``) or as a PDF page (``summary``).

:class:`ResponseReport` gathers the inputs: the patient and the studies of the timeline, the response-core
timeline and assessment, and the DICOM facts about each lesion that the clinical model does not carry
(Tracking UID and identifier, finding site codes, the image and region it was measured on). :func:`table`
derives the lesion table both outputs show: baseline, nadir, previous and current columns, the target sums,
the % changes and the thresholds for the next read. A *pre-read* report is written into a study that has
images but no measurements yet: the timeline then holds the priors only and the current column is empty.

Pure: no pydicom dataset is built here, nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from agent.response.model import (
    SEVERITY_RANK,
    Alert,
    Assessment,
    Category,
    Criterion,
    CriterionResult,
    Lesion,
    LesionKind,
    Threshold,
    Timeline,
    TimepointAssessment,
)
from agent.response.morphology import morphology_group
from agent.response.parse import (
    explanation,
    explanation_lines,
    marker_lines,
    markers_to_dict,
    site_lines,
    sites_to_dict,
)
from agent.response.recist import assess as recist_assess
from agent.response.recist import percent_change, target_value
from agent.response.registry import build_registry
from agent.sr.codes import Code
from agent.sr.read import ImageRef, Region


@dataclass(frozen=True, slots=True)
class PatientInfo:
    """The patient banner; values as in the DICOM header (Person Name and DA strings)."""

    name: str
    patient_id: str
    birth_date: str | None = None  # YYYYMMDD
    sex: str | None = None
    character_set: str | None = None  # Specific Character Set of the source header


@dataclass(frozen=True, slots=True)
class StudyInfo:
    study_uid: str
    date: date
    time: str | None = None  # HHMMSS
    accession: str | None = None
    study_id: str | None = None
    description: str | None = None
    referring_physician: str | None = None
    modality: str | None = None


@dataclass(frozen=True, slots=True)
class Instance:
    """One composite instance used as evidence (an image measured, a prior SR read)."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class LesionDicom:
    """DICOM facts about one lesion at the current time point that the clinical model does not hold."""

    tracking_uid: str | None = None  # the baseline's Tracking UID; None: derived from the org root
    tracking_identifier: str | None = None
    site_codes: tuple[Code, ...] = ()
    images: tuple[ImageRef, ...] = ()
    regions: tuple[Region, ...] = ()
    # (time point index, how) for each mean HU the agent measured from the image (the SR gave none).
    hu_computed: tuple[tuple[int, str], ...] = ()
    # (time point index, why) where the contrast phase of the image it was measured on stays unknown.
    phase_unknown: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ResponseReport:
    """Everything the response SR and its summary say.

    ``studies`` is aligned with ``timeline.timepoints``. ``current`` is the study the report is written
    into: the last of ``studies``, or (``pre_read``) the newer study whose measurements are still to come.
    """

    patient: PatientInfo
    studies: tuple[StudyInfo, ...]
    current: StudyInfo
    timeline: Timeline
    assessment: Assessment
    lesions: Mapping[str, LesionDicom] = field(default_factory=dict)
    evidence: tuple[Instance, ...] = ()
    predecessors: tuple[Instance, ...] = ()
    pre_read: bool = False

    def __post_init__(self) -> None:
        if len(self.studies) != len(self.timeline.timepoints):
            raise ValueError("one study per time point of the timeline is needed")
        if not self.pre_read and self.current.study_uid != self.studies[-1].study_uid:
            raise ValueError("the current study must be the last time point (or the report a pre-read)")

    @property
    def current_index(self) -> int | None:
        """Index of the current time point in the timeline; None for a pre-read."""
        return None if self.pre_read else len(self.studies) - 1

    def label(self, index: int) -> str:
        """Time point label: BL, FU1, FU2, ..., PRE1 ... before the baseline (the timeline's labels); the
        pre-read's current study is the next FU."""
        if index < len(self.timeline.timepoints):
            return self.timeline.label(index)
        return f"FU{index - self.timeline.baseline_index}"

    @property
    def current_label(self) -> str:
        return self.label(len(self.studies) if self.pre_read else len(self.studies) - 1)

    def result(self, criterion: Criterion) -> CriterionResult | None:
        return self.assessment.get(criterion)

    def recist(self) -> CriterionResult:
        """RECIST 1.1 result (computed for the sums when the assessment did not ask for it)."""
        return self.assessment.get(Criterion.RECIST) or recist_assess(self.timeline)


# --------------------------------------------------------------------------------------------------------
# The lesion table


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # baseline / nadir / previous / current
    title: str
    index: int | None  # time point index; None: current column of a pre-read (no measurements yet)
    date: date


@dataclass(frozen=True, slots=True)
class LesionRow:
    lesion_id: str
    kind: LesionKind
    organ: str
    is_node: bool
    label: str  # T1, NT2, N1
    name: str  # the Tracking Identifier, else the lesion id
    values: tuple[str, ...]  # one cell per column as text ("32 mm", "18 mm (present)", "–")
    cells: tuple[tuple[str, str], ...]  # the same as (value, note) pairs
    numbers: tuple[Decimal | None, ...]  # the diameter (short axis for nodes) per time point of the timeline
    current: Lesion | None


@dataclass(frozen=True, slots=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[LesionRow, ...]
    sums: tuple[Decimal | None, ...]  # target sum per column
    sums_by_timepoint: tuple[Decimal | None, ...]
    nadir_index: int | None
    change_vs_baseline_pct: Decimal | None  # current column
    change_vs_nadir_pct: Decimal | None
    thresholds: tuple[Threshold, ...]  # RECIST thresholds for the next read


def _mm(value: Decimal | None) -> str:
    return "–" if value is None else f"{value.quantize(Decimal('0.1')).normalize():f} mm"


def fmt_mm(value: Decimal | None) -> str:
    """A length for display: one decimal at most, no trailing zeros ("32 mm", "23.1 mm")."""
    return _mm(value)


def fmt_pct(value: Decimal | None) -> str:
    if value is None:
        return "–"
    q = value.quantize(Decimal("0.1"))
    return f"{'+' if q > 0 else ''}{q:f} %"


def cell(record: Lesion | None) -> tuple[str, str, Decimal | None]:
    """(value, note, diameter) of one lesion record: ("36 mm", "62 HU", 36), ("–", "not reported", None)."""
    if record is None:
        return "–", "not reported", None
    status = record.status.value.replace("_", " ")
    if record.kind is LesionKind.TARGET:
        value = target_value(record)
        if value is None:
            return "–", status, None
        note = status if record.status.value in ("too_small", "disappeared", "coalesced") else ""
        if record.fragments_mm:
            note = f"{len(record.fragments_mm)} fragments"
        extras = []
        if record.mean_hu is not None:  # the density Choi compares, visit by visit
            extras.append(f"{record.mean_hu.quantize(Decimal('1'))} HU")
        group = morphology_group(record)
        if group is not None:  # the Chun morphology group, visit by visit
            extras.append(f"G{group}")
        note = ", ".join([note, *extras] if note else extras)
        return _mm(value), note, value
    value = record.diameter_mm
    if value is not None:
        return _mm(value), status, value
    return status, "", None


def _text(main: str, note: str) -> str:
    return f"{main} ({note})" if note else main


def sums_by_timepoint(report: ResponseReport) -> tuple[Decimal | None, ...]:
    recist = report.recist()
    tps: tuple[TimepointAssessment | None, ...] = recist.timepoints
    b = report.timeline.baseline_index
    return tuple(recist.baseline_sum_mm if i == b else tp.sum_mm if tp else None for i, tp in enumerate(tps))


def nadir_index(sums: tuple[Decimal | None, ...], before: int, start: int = 0) -> int | None:
    """Index of the smallest known sum among time points ``start`` (the baseline) to ``before`` (excluded),
    earliest on ties."""
    best: int | None = None
    for i in range(start, min(before, len(sums))):
        s = sums[i]
        if s is not None and (best is None or s < (sums[best] or Decimal(0))):
            best = i
    return best


def table(report: ResponseReport) -> Table:
    tl = report.timeline
    n = len(tl.timepoints)
    registry = build_registry(tl)
    sums = sums_by_timepoint(report)
    current = report.current_index
    last_prior = n - 1 if report.pre_read else n - 2
    b = tl.baseline_index
    nadir = nadir_index(sums, n if report.pre_read else n - 1, b)
    # One column per distinct time point: "Baseline = nadir", "Previous = nadir (FU1)" when they coincide.
    base_title = "Baseline = nadir" if nadir == b else "Baseline"
    columns: list[Column] = [Column("baseline", base_title, b, tl.timepoints[b].date)]
    if nadir is not None and nadir not in (b, last_prior):
        columns.append(Column("nadir", f"Nadir ({report.label(nadir)})", nadir, tl.timepoints[nadir].date))
    if last_prior > b:
        title = "Previous = nadir" if nadir == last_prior else "Previous"
        date_ = tl.timepoints[last_prior].date
        columns.append(Column("previous", f"{title} ({report.label(last_prior)})", last_prior, date_))
    columns.append(Column("current", f"Current ({report.current_label})", current, report.current.date))

    rows: list[LesionRow] = []

    def add(
        lesion_id: str, kind: LesionKind, organ: str, is_node: bool, records: list[Lesion | None]
    ) -> None:
        cells: list[tuple[str, str]] = []
        for col in columns:
            if col.index is None:
                cells.append(("pending", ""))
            elif kind is LesionKind.NEW and records[col.index] is None:
                cells.append(("–", ""))  # not there yet
            else:
                main, note, _ = cell(records[col.index])
                cells.append((main, note))
        numbers = tuple(cell(r)[2] if r is not None else None for r in records)
        prefix = {LesionKind.TARGET: "T", LesionKind.NON_TARGET: "NT", LesionKind.NEW: "N"}[kind]
        ordinal = 1 + sum(1 for r in rows if r.kind is kind)
        dicom = report.lesions.get(lesion_id)
        name = (dicom.tracking_identifier if dicom and dicom.tracking_identifier else None) or lesion_id
        rows.append(
            LesionRow(
                lesion_id,
                kind,
                organ,
                is_node,
                f"{prefix}{ordinal}",
                name,
                tuple(_text(m, n) for m, n in cells),
                tuple(cells),
                numbers,
                records[current] if current is not None else None,
            )
        )

    for k, base in enumerate(registry.targets):
        add(
            base.id,
            LesionKind.TARGET,
            base.organ,
            base.is_node,
            [recs[k] for recs in registry.target_records],
        )
    for k, base in enumerate(registry.non_targets):
        add(
            base.id,
            LesionKind.NON_TARGET,
            base.organ,
            base.is_node,
            [recs[k] for recs in registry.non_target_records],
        )
    seen: dict[str, Lesion] = {}
    for recs in registry.new_records:
        for rec in recs:
            seen.setdefault(rec.id, rec)
    for lesion_id, first in seen.items():
        records: list[Lesion | None] = [
            next((r for r in recs if r.id == lesion_id), None) for recs in registry.new_records
        ]
        add(lesion_id, LesionKind.NEW, first.organ, first.is_node, records)

    col_sums = tuple(None if c.index is None else sums[c.index] for c in columns)
    vs_bl = vs_nadir = None
    if current is not None and current > b:
        vs_bl = percent_change(sums[current], sums[b])
        vs_nadir = percent_change(sums[current], sums[nadir] if nadir is not None else None)
    recist = report.recist()
    return Table(
        columns=tuple(columns),
        rows=tuple(rows),
        sums=col_sums,
        sums_by_timepoint=sums,
        nadir_index=nadir,
        change_vs_baseline_pct=vs_bl,
        change_vs_nadir_pct=vs_nadir,
        thresholds=recist.next_thresholds,
    )


_QUANTITIES = {
    "target_sum_mm": "the target sum",
    "density_hu": "the mean target density",
    "non_nodal_target_mm": "any non-nodal target (or a non-target reappears)",
    "target_node_short_axis_mm": "a target node's short axis",
}


def threshold_text(t: Threshold) -> str:
    """ "PD if the target sum reaches >= 60 mm" (the wording the radiologist sees)."""
    quantity = _QUANTITIES.get(t.quantity, t.quantity.replace("_", " "))
    unit = " mm" if t.quantity.endswith("_mm") else (" HU" if t.quantity.endswith("_hu") else "")
    verb = {">=": "reaches", ">": "exceeds"}.get(t.comparison, "falls to")
    value = f"{t.value.quantize(Decimal('0.1')).normalize():f}"
    return f"{t.category.value} if {quantity} {verb} {t.comparison} {value}{unit}"


def criterion_name(criterion: Criterion) -> str:
    return "RECIST 1.1" if criterion is Criterion.RECIST else criterion.value


def category_text(category: Category | None) -> str:
    if category is None:
        return "–"
    return {Category.NON_CR_NON_PD: "non-CR/non-PD", Category.NONE: "none"}.get(category, category.value)


# Sentences shared by the SR and its PDF summary (agent.sr.write, agent.sr.summary).


def criterion_explanation(report: ResponseReport, result: CriterionResult) -> list[str]:
    """The figures behind the current category (docs/criteria.md §1.7): reference with label and date, sums
    and % changes, densities, per-lesion groups, iRECIST state; the same lines as the PDF and the worklist."""
    current = report.current_index
    if current is None or current >= len(result.timepoints):
        return []
    tp = result.timepoints[current]
    if tp is None:
        return []
    return explanation_lines(explanation(tp, report.assessment, result.baseline_sum_mm))


def site_split_lines(report: ResponseReport) -> list[str]:
    """The current time point split by site (docs/criteria.md §13.1): each site's target sum and % change
    against its own baseline and nadir, each site's status, non-targets by organ."""
    current = report.current_index
    if current is None or current <= report.timeline.baseline_index:
        return []
    entries = sites_to_dict(report.assessment)
    return site_lines(entries[current]) if current < len(entries) else []


def marker_status_lines(report: ResponseReport) -> list[str]:
    """Each tumour marker's category at the current time point, with its rule (docs/criteria.md §13.2)."""
    current = report.current_index
    if current is None or current <= report.timeline.baseline_index:
        return []
    return marker_lines(markers_to_dict(report.assessment), current)


def metabolic_lines(report: ResponseReport) -> list[str]:
    """Each follow-up PET's metabolic response up to the current time point (docs/criteria.md §13.3)."""
    current = report.current_index
    if current is None or current >= len(report.timeline.timepoints):
        return []
    until = report.timeline.timepoints[current].date
    window = report.timeline.options.pet_window_days
    out = []
    for r in report.assessment.metabolic:
        if (r.date - until).days > window:
            continue
        fallback = f" {r.fallback}." if r.fallback else ""
        out.append(f"PET {r.date}: {r.category.value} by {r.method} ({r.rule}).{fallback}")
    return out


def criterion_summary(report: ResponseReport, result: CriterionResult) -> str:
    """One sentence per criterion: category, why, BOR (the same words as the PDF)."""
    name = criterion_name(result.criterion)
    if not result.applicable:
        return f"{name}: not applicable. " + " ".join(result.notes)
    current = report.current_index
    if current is None:
        last = next((tp for tp in reversed(result.timepoints) if tp is not None), None)
        if last is None:
            return f"{name}: pre-read; baseline only, no response yet."
        return (
            f"{name}: pre-read; last response {category_text(last.category)} at "
            f"{report.label(last.index)} {last.date.isoformat()} ({last.rule}); "
            f"BOR so far {category_text(result.bor)}."
        )
    if current <= report.timeline.baseline_index:
        return f"{name}: baseline; no response yet."
    tp = result.timepoints[current]
    if tp is None:
        return f"{name}: no result at {report.current_label}."
    text = f"{name}: {category_text(tp.category)} at {report.current_label} ({tp.rule})"
    if tp.ne_reason:
        text += f"; not evaluable because {tp.ne_reason}"
    return text + f"; BOR {category_text(result.bor)}."


def sorted_alerts(report: ResponseReport) -> list[Alert]:
    """Alerts by severity (critical first), then by time point (newest first), then code."""
    return sorted(
        report.assessment.alerts,
        key=lambda a: (SEVERITY_RANK.get(a.severity.value, 3), -(a.timepoint or 0), a.code, a.message),
    )
