"""Study context of an SR: which study it measured, when, with which modality, slice thickness and phase.

The facts come from the referenced image series when the caller can look them up (an injected
:class:`SeriesLookup`, e.g. backed by the local index: this module never imports the database or the
network), else from what the SR itself says (evidence, image library, header). The contrast phase is
normalised from the Contrast/Bolus attributes and the series description by configurable regular-expression
rules (:data:`DEFAULT_PHASE_RULES`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol

from agent.response.model import Phase
from agent.sr.read import SOP_CLASS_MODALITY, EvidenceRef, ImageRef, SRReport
from agent.sr.values import parse_da


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """The acquisition context of a measured image (its series, and the image itself where known).

    All optional. ``source`` says where it was learned: ``index`` (the series is in our spool), ``query``
    (the PACS answered a C-FIND), ``retrieved`` (the referenced instance was fetched from the PACS), or
    ``learned`` (kept in the index from an earlier query or retrieval).
    """

    study_uid: str | None = None
    series_uid: str | None = None
    study_date: date | None = None
    modality: str | None = None
    slice_thickness_mm: Decimal | None = None
    series_description: str | None = None
    contrast_agent: str | None = None  # Contrast/Bolus Agent (0018,0010)
    contrast_route: str | None = None  # Contrast/Bolus Route (0018,1040)
    kvp: Decimal | None = None  # KVP (0018,0060)
    pixel_spacing_mm: tuple[Decimal, Decimal] | None = None  # Pixel Spacing (0028,0030), row\column
    contrast_delay_s: Decimal | None = None  # Acquisition Time - Contrast/Bolus Start Time
    source: str | None = None


class SeriesLookup(Protocol):
    """Finds the series of a referenced image; any argument may be None. Returns None when unknown."""

    def __call__(
        self, study_uid: str | None, series_uid: str | None, sop_instance_uid: str | None
    ) -> SeriesInfo | None: ...


@dataclass(frozen=True, slots=True)
class PhaseRule:
    """``pattern`` (case-insensitive regex) found in the series description or contrast agent -> ``phase``."""

    pattern: str
    phase: Phase


# Order matters: the first rule that matches wins ("late arterial" is arterial, not delayed). Words in
# English, German, French and Spanish ("portal venös", "temps portal", "fase portal", "veineux", "venosa").
DEFAULT_PHASE_RULES: tuple[PhaseRule, ...] = (
    PhaseRule(
        r"\b(un|non)[- ]?enhanced|non[- ]?contrast|without contrast|\bw/?o\b|pre[- ]?contrast|"
        r"\bnative?\b|\bnativ\b|\bplain\b|\bnc\b|sans\s+(contraste|iv|injection)|sin\s+contraste|"
        r"\bsimple\b|ohne\s+(km|kontrast)",
        Phase.UNENHANCED,
    ),
    PhaseRule(r"hepato[- ]?biliary|\bhbp\b|\b(15|20)\s*min|gadoxet|primovist|eovist", Phase.HEPATOBILIARY),
    PhaseRule(r"arterial|arteriell|art[ée]riel|\bart\b|\bhat\b|\bearly\b|\bar?t\.?\s*ph", Phase.ARTERIAL),
    PhaseRule(
        r"portal|\bpv\b|\bpvp\b|venous|ven[oö]s|\bven\b|veineu[xs]e?|venos[ao]|\bvp\b|"
        r"\b(60|65|70|75|80|90)\s*s(ec)?\b",
        Phase.PORTAL_VENOUS,
    ),
    PhaseRule(
        r"delayed|equilibrium|\blate\b|sp[äa]t|tardi[fv]e?|tard[ií]a|retardad[ao]|\b(3|5|10)\s*min",
        Phase.DELAYED,
    ),
)
# Seconds after the contrast start (Acquisition Time - Contrast/Bolus Start Time) -> phase, when the words
# say nothing: late arterial ~35-45 s, portal venous ~60-90 s, equilibrium / delayed from ~3 min.
TIMING_PHASES: tuple[tuple[int, int, Phase], ...] = (
    (15, 50, Phase.ARTERIAL),
    (50, 120, Phase.PORTAL_VENOUS),
    (150, 1200, Phase.DELAYED),
)
_ENHANCED_PHASES = (Phase.ARTERIAL, Phase.PORTAL_VENOUS, Phase.DELAYED, Phase.HEPATOBILIARY)
_NO_AGENT = re.compile(r"^\s*(none|no|n/?a|nil|-|0|without)?\s*$", re.IGNORECASE)


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def normalise_phase(
    description: str | None,
    contrast_agent: str | None,
    rules: Sequence[PhaseRule] = DEFAULT_PHASE_RULES,
    delay_s: Decimal | None = None,
) -> tuple[Phase | None, bool | None]:
    """(phase, contrast given) from a series description, Contrast/Bolus Agent and the contrast delay.

    The words win; the delay after the contrast start (:data:`TIMING_PHASES`) decides only when they say
    nothing, and only for an enhanced acquisition. None when unknown.
    """
    agent_given = contrast_agent is not None and not _NO_AGENT.match(contrast_agent)
    agent_absent = contrast_agent is not None and not agent_given
    phase: Phase | None = None
    for text in (description, contrast_agent if agent_given else None):
        if not text:
            continue
        for rule in rules:
            if _compiled(rule.pattern).search(text):
                phase = rule.phase
                break
        if phase is not None:
            break
    if phase is None and delay_s is not None and not agent_absent:
        phase = next((p for low, high, p in TIMING_PHASES if low <= delay_s < high), None)
    if phase is None and agent_absent:
        phase = Phase.UNENHANCED
    if phase is Phase.UNENHANCED:
        return phase, False
    if phase in _ENHANCED_PHASES or agent_given:
        return phase, True
    return phase, None


@dataclass(frozen=True, slots=True)
class StudyContext:
    """The time point an SR describes, and where each fact came from."""

    study_uid: str | None
    date: date | None
    modality: str | None
    slice_thickness_mm: Decimal | None
    phase: Phase | None
    contrast: bool | None
    facts_from: str  # where the series facts came from (SeriesInfo.source: index, query, ...), else "sr"
    warnings: tuple[str, ...] = ()


def study_context(
    report: SRReport,
    lookup: SeriesLookup | None = None,
    rules: Sequence[PhaseRule] = DEFAULT_PHASE_RULES,
) -> StudyContext:
    """Resolve the study, date, modality, slice thickness and phase of the images the SR measured."""
    warns: list[str] = []
    referenced = report.referenced_study_uids()
    study_uid = referenced[0] if referenced else report.study_uid
    measured = _measured_studies(report)
    if len(measured) > 1:
        warns.append(f"measurements reference {len(measured)} studies; the most referenced one is used")
    infos: list[SeriesInfo] = []
    if lookup is not None:
        seen: set[tuple[str | None, str | None]] = set()
        for ev in _measured_evidence(report, study_uid):
            key = (ev.series_uid, ev.sop_instance_uid if ev.series_uid is None else None)
            if key in seen:
                continue
            seen.add(key)
            info = lookup(ev.study_uid, ev.series_uid, ev.sop_instance_uid)
            if info is not None:
                infos.append(info)
    the_date = next((i.study_date for i in infos if i.study_date), None)
    if the_date is None:
        the_date = next(
            (e.study_date for e in report.evidence if e.study_uid == study_uid and e.study_date), None
        )
    if the_date is None and (study_uid == report.study_uid or study_uid is None):
        the_date = report.study_date or report.series_date
    if the_date is None and report.content_date is not None:
        the_date = report.content_date
        warns.append("no study date in the SR or the index: the SR content date is used")
    if the_date is None:
        warns.append("no study date anywhere in the SR")
    modality = next((i.modality for i in infos if i.modality), None)
    if modality is None:
        modality = _modality_from_sop_classes(report)
    thickness = next((i.slice_thickness_mm for i in infos if i.slice_thickness_mm is not None), None)
    phase: Phase | None = None
    contrast: bool | None = None
    for info in infos:
        p, c = normalise_phase(info.series_description, info.contrast_agent, rules, info.contrast_delay_s)
        if phase is None and p is not None:
            phase = p
        if contrast is None and c is not None:
            contrast = c
    return StudyContext(
        study_uid=study_uid,
        date=the_date,
        modality=modality,
        slice_thickness_mm=thickness,
        phase=phase,
        contrast=contrast,
        facts_from=(infos[0].source or "index") if infos else "sr",
        warnings=tuple(warns),
    )


def image_phase(
    report: SRReport,
    images: Sequence[ImageRef],
    lookup: SeriesLookup | None,
    rules: Sequence[PhaseRule] = DEFAULT_PHASE_RULES,
) -> Phase | None:
    """The phase of the series a lesion was measured on (None when not known)."""
    return image_context(report, images, lookup, rules)[0]


def image_context(
    report: SRReport,
    images: Sequence[ImageRef],
    lookup: SeriesLookup | None,
    rules: Sequence[PhaseRule] = DEFAULT_PHASE_RULES,
) -> tuple[Phase | None, SeriesInfo | None, str | None]:
    """(phase, acquisition context, why the phase is unknown) of the images a lesion was measured on."""
    if not images:
        return None, None, "the measurement references no image"
    if lookup is None:
        return None, None, "the acquisition context of the measured image is not looked up"
    first: SeriesInfo | None = None
    for img in images:
        ev = report.evidence_of(img.sop_instance_uid)
        info = lookup(ev.study_uid if ev else None, ev.series_uid if ev else None, img.sop_instance_uid)
        if info is None:
            continue
        first = first or info
        phase, _ = normalise_phase(info.series_description, info.contrast_agent, rules, info.contrast_delay_s)
        if phase is not None:
            return phase, info, None
    if first is None:
        return None, None, "the measured image's series is neither in the index nor known to the PACS"
    agent = first.contrast_agent or "none given"
    return (
        None,
        first,
        f"contrast phase unknown: series description {first.series_description or '(empty)'!r}, "
        f"Contrast/Bolus Agent {agent!r}, "
        + (
            "no contrast timing"
            if first.contrast_delay_s is None
            else f"{first.contrast_delay_s} s after start"
        ),
    )


def _decimal(value: object) -> Decimal | None:
    try:
        number = Decimal(str(value).strip())
    except (ArithmeticError, ValueError):
        return None
    return number if number.is_finite() else None


def _seconds(tm: object) -> Decimal | None:
    """Seconds since midnight of a DICOM TM (HHMMSS.FFFFFF, also HH:MM:SS); None when not a time."""
    text = str(tm or "").strip().replace(":", "")
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        hours, minutes = int(text[0:2]), int(text[2:4] or 0)
        seconds = Decimal(text[4:] or 0)
    except (ValueError, ArithmeticError):
        return None
    return hours * 3600 + minutes * 60 + seconds


def contrast_delay(start: object, acquired: object) -> Decimal | None:
    """Seconds from Contrast/Bolus Start Time to Acquisition Time (across midnight too); None if unknown."""
    a, b = _seconds(start), _seconds(acquired)
    if a is None or b is None:
        return None
    delay = b - a if b >= a else b + 86400 - a
    return delay if delay < 4 * 3600 else None


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword) if ds is not None else None
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value) or None
    return str(value).strip() or None


def series_info(ds: Any, source: str) -> SeriesInfo:
    """The acquisition context in a dataset: an image header or a C-FIND answer (absent keys stay None)."""
    spacing = ds.get("PixelSpacing") if ds is not None else None
    pixel_spacing: tuple[Decimal, Decimal] | None = None
    if spacing is not None and not isinstance(spacing, str) and len(spacing) == 2:
        row, col = _decimal(spacing[0]), _decimal(spacing[1])
        pixel_spacing = (row, col) if row is not None and col is not None else None
    thickness = _text(ds, "SliceThickness")
    kvp = _text(ds, "KVP")
    modality = _text(ds, "Modality")
    return SeriesInfo(
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        study_date=parse_da(_text(ds, "StudyDate")),
        modality=modality.upper() if modality else None,
        slice_thickness_mm=_decimal(thickness) if thickness else None,
        series_description=_text(ds, "SeriesDescription"),
        contrast_agent=_text(ds, "ContrastBolusAgent"),
        contrast_route=_text(ds, "ContrastBolusRoute"),
        kvp=_decimal(kvp) if kvp else None,
        pixel_spacing_mm=pixel_spacing,
        contrast_delay_s=contrast_delay(
            _text(ds, "ContrastBolusStartTime"), _text(ds, "AcquisitionTime") or _text(ds, "ContentTime")
        ),
        source=source,
    )


def merge(first: SeriesInfo, second: SeriesInfo | None) -> SeriesInfo:
    """``first`` completed by what ``second`` knows (``first``'s source kept)."""
    if second is None:
        return first
    values = {
        name: getattr(first, name) if getattr(first, name) is not None else getattr(second, name)
        for name in SeriesInfo.__slots__
    }
    return SeriesInfo(**values)


def _measured_evidence(report: SRReport, study_uid: str | None) -> list[EvidenceRef]:
    measured = {img.sop_instance_uid for g in report.groups for img in g.images}
    refs = [e for e in report.evidence if e.sop_instance_uid in measured]
    refs += [e for e in report.evidence if e.study_uid == study_uid and e not in refs]
    known = {e.sop_instance_uid for e in refs}
    refs += [EvidenceRef(None, None, uid, None) for uid in sorted(measured - known)]
    return refs[:64]


def _measured_studies(report: SRReport) -> set[str]:
    """Studies of the images the groups measured (other evidence, e.g. priors a report cites, not counted)."""
    measured = {img.sop_instance_uid for g in report.groups for img in g.images}
    studies = {e.study_uid for e in report.evidence if e.study_uid and e.sop_instance_uid in measured}
    if not studies:  # nothing measured on a listed image: every study in the evidence is a candidate
        studies = {e.study_uid for e in report.evidence if e.study_uid}
    return studies


def _modality_from_sop_classes(report: SRReport) -> str | None:
    classes = [e.sop_class_uid for e in report.evidence] + [
        img.sop_class_uid for g in report.groups for img in g.images
    ]
    for cls in classes:
        if cls and cls in SOP_CLASS_MODALITY:
            return SOP_CLASS_MODALITY[cls]
    return None
