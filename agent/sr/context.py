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
from typing import Protocol

from agent.response.model import Phase
from agent.sr.read import SOP_CLASS_MODALITY, EvidenceRef, ImageRef, SRReport


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What the index knows about one image series (all optional)."""

    study_uid: str | None = None
    series_uid: str | None = None
    study_date: date | None = None
    modality: str | None = None
    slice_thickness_mm: Decimal | None = None
    series_description: str | None = None
    contrast_agent: str | None = None  # Contrast/Bolus Agent (0018,0010)
    contrast_route: str | None = None  # Contrast/Bolus Route (0018,1040)


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


# Order matters: the first rule that matches wins ("late arterial" is arterial, not delayed).
DEFAULT_PHASE_RULES: tuple[PhaseRule, ...] = (
    PhaseRule(
        r"\b(un|non)[- ]?enhanced|non[- ]?contrast|without contrast|\bw/?o\b|pre[- ]?contrast|"
        r"\bnative?\b|\bnativ\b|\bplain\b|\bnc\b|sans\s+(contraste|iv)",
        Phase.UNENHANCED,
    ),
    PhaseRule(r"hepato[- ]?biliary|\bhbp\b|\b(15|20)\s*min|gadoxet|primovist|eovist", Phase.HEPATOBILIARY),
    PhaseRule(r"arterial|arteriell|\bart\b|\bhat\b|\bearly\b", Phase.ARTERIAL),
    PhaseRule(r"portal|\bpv\b|\bpvp\b|venous|ven[oö]s|\bvp\b|\b(60|70|80)\s*s(ec)?\b", Phase.PORTAL_VENOUS),
    PhaseRule(r"delayed|equilibrium|\blate\b|sp[äa]t|\b(3|5|10)\s*min", Phase.DELAYED),
)
_ENHANCED_PHASES = (Phase.ARTERIAL, Phase.PORTAL_VENOUS, Phase.DELAYED, Phase.HEPATOBILIARY)
_NO_AGENT = re.compile(r"^\s*(none|no|n/?a|nil|-|0|without)?\s*$", re.IGNORECASE)


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def normalise_phase(
    description: str | None, contrast_agent: str | None, rules: Sequence[PhaseRule] = DEFAULT_PHASE_RULES
) -> tuple[Phase | None, bool | None]:
    """(phase, contrast given) from a series description and Contrast/Bolus Agent; None when unknown."""
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
    facts_from: str  # "index" when the series lookup answered, else "sr"
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
        p, c = normalise_phase(info.series_description, info.contrast_agent, rules)
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
        facts_from="index" if infos else "sr",
        warnings=tuple(warns),
    )


def image_phase(
    report: SRReport,
    images: Sequence[ImageRef],
    lookup: SeriesLookup | None,
    rules: Sequence[PhaseRule] = DEFAULT_PHASE_RULES,
) -> Phase | None:
    """The phase of the series a lesion was measured on (None when not known)."""
    if lookup is None:
        return None
    for img in images:
        ev = next((e for e in report.evidence if e.sop_instance_uid == img.sop_instance_uid), None)
        info = lookup(ev.study_uid if ev else None, ev.series_uid if ev else None, img.sop_instance_uid)
        if info is not None:
            phase, _ = normalise_phase(info.series_description, info.contrast_agent, rules)
            if phase is not None:
                return phase
    return None


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
