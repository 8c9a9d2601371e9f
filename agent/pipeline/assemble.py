"""One report from SR files: read -> link -> assess -> report. No database, no network.

Both the service's worker (``agent.pipeline.worker``) and ``liver-agent sr assess`` call this module, so the
same inputs give the same response SR by construction:

1. **Read** (:func:`read_reports`): each SR file -> ``SRReport`` (``agent.sr.read``), its study context and
   lesion observations (``agent.sr.context``, ``agent.sr.observations``); image facts (slice thickness,
   contrast) come from an injected series lookup when the caller has the images (the worker's index, the
   command's ``--images``). Our own SRs (Manufacturer ``liver-agent``) never stand in for a radiologist's SR
   of the same study (:func:`set_aside_ours`).
2. **Link** (``agent.pipeline.tracking.build_timeline``): one time point per study, lesions followed across
   studies.
3. **Assess** (``agent.response.table.assess_timeline``) under the criteria of the patient's context.
4. **Report** (:func:`build_report`): the ``ResponseReport`` the writer (``agent.sr.write``) needs besides the
   clinical model: the patient and study headers, each lesion's baseline Tracking UID, finding sites, image
   references and regions of its last measurement, the evidence, the predecessors, and the tracking alerts.

The current study (the one the report is written into) is the newest study read, or (``current``) a study
of which the caller holds an image header; a current study without a measurement SR of its own gets a
pre-read: the priors' table and the thresholds for the coming read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from agent.config import SRSettings
from agent.pipeline.tracking import ReportInput, TrackedTimeline, TrackingError, build_timeline
from agent.response.alerts import CATALOGUE
from agent.response.model import (
    Alert,
    Assessment,
    Context,
    MarkerResult,
    Options,
    PetScan,
    Phase,
    Severity,
    Timeline,
)
from agent.response.table import assess_timeline
from agent.sr.context import DEFAULT_PHASE_RULES, PhaseRule, SeriesLookup, study_context
from agent.sr.observations import observations
from agent.sr.pet import pet_scan
from agent.sr.read import Limits, ReportCache, SRReadError, SRReport, read_sr, require_measurements
from agent.sr.report import Instance, LesionDicom, PatientInfo, ResponseReport, StudyInfo

__all__ = [
    "Assembly",
    "CurrentStudy",
    "NoEarlierStudy",
    "TrackingError",
    "assemble",
    "build_report",
    "read_header",
    "read_reports",
    "reader_settings",
    "render",
    "set_aside_ours",
    "timeline_options",
]

HEADER_TAGS = [
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "Modality",
]


# --------------------------------------------------------------------------------------------------------
# 1. Read


def timeline_options(sr: SRSettings | None) -> Options:
    """The timeline options the ``sr:`` settings set (the same for the service and the command)."""
    return Options() if sr is None else Options(choi_assume_unknown_phase=sr.choi_assume_unknown_phase)


def reader_settings(sr: SRSettings | None) -> tuple[list[PhaseRule], Limits]:
    """Phase rules and reader limits from the ``sr:`` settings (built-in rules when none are configured)."""
    if sr is None:
        return list(DEFAULT_PHASE_RULES), Limits()
    rules = [PhaseRule(r.pattern, Phase(r.phase)) for r in sr.phase_rules] or list(DEFAULT_PHASE_RULES)
    limits = Limits(
        max_depth=sr.max_depth, max_items=sr.max_items, max_file_bytes=int(sr.max_file_mb * 1024 * 1024)
    )
    return rules, limits


def read_reports(
    files: Sequence[str | Path],
    *,
    lookup: SeriesLookup | None = None,
    rules: Sequence[PhaseRule] = DEFAULT_PHASE_RULES,
    limits: Limits | None = None,
    cache: ReportCache | None = None,
) -> tuple[list[ReportInput], dict[str, str], dict[str, list[str]]]:
    """(usable reports, reason per unusable file, warnings per file); keys are the paths as given.

    With ``cache`` (the worker's), an SR file read before is not parsed again.
    """
    usable: list[ReportInput] = []
    failures: dict[str, str] = {}
    file_warnings: dict[str, list[str]] = {}
    for given in files:
        path = str(given)
        try:
            report = require_measurements(read_sr(path, limits=limits, cache=cache))
        except SRReadError as exc:
            failures[path] = exc.reason
            continue
        ctx = study_context(report, lookup, rules)
        obs, obs_warnings = observations(report, lookup, rules)
        warns = list(report.warnings) + list(ctx.warnings) + obs_warnings
        warns += [f"{g.label}: {w}" for g in report.groups for w in g.warnings]
        file_warnings[path] = list(dict.fromkeys(warns))
        usable.append(ReportInput(report, ctx, tuple(obs), tuple(warns)))
    return usable, failures, file_warnings


def is_ours(report: SRReport) -> bool:
    from agent.sr.write import AGENT_NAME  # (the writer loads highdicom: only when needed)

    return (report.manufacturer or "").strip() == AGENT_NAME


def set_aside_ours(usable: Sequence[ReportInput]) -> tuple[list[ReportInput], list[ReportInput]]:
    """(inputs for the timeline, our SRs set aside): ours only count for a study nobody else measured."""
    others = {u.context.study_uid for u in usable if not is_ours(u.report)}
    keep = [u for u in usable if not is_ours(u.report) or u.context.study_uid not in others]
    ours = [u for u in usable if u not in keep]
    return keep, ours


def read_header(path: str | Path | None) -> Dataset:
    """The patient and study attributes of a DICOM file (an empty dataset for None)."""
    if path is None:
        return Dataset()
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)


# --------------------------------------------------------------------------------------------------------
# 4. Report


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if isinstance(value, MultiValue | list):
        value = " ".join(str(v) for v in value)
    text = str(value).strip() if value is not None else ""
    return text or None


def _instance(report: SRReport) -> Instance | None:
    if report.study_uid and report.series_uid and report.sop_instance_uid:
        return Instance(report.study_uid, report.series_uid, report.sop_class_uid, report.sop_instance_uid)
    return None


def _images(report: SRReport) -> list[Instance]:
    """The evidence entries of ``report`` for the images its groups measured (else all its evidence)."""
    measured = {img.sop_instance_uid for g in report.groups for img in g.images}
    complete = [
        e for e in report.evidence if e.study_uid and e.series_uid and e.sop_class_uid and e.sop_instance_uid
    ]
    chosen = [e for e in complete if e.sop_instance_uid in measured] or complete
    return [
        Instance(str(e.study_uid), str(e.series_uid), str(e.sop_class_uid), str(e.sop_instance_uid))
        for e in chosen
    ]


def study_info(header: Dataset, study_uid: str, day: date | None, modality: str | None) -> StudyInfo:
    """A study's banner facts: from ``header`` when it belongs to that study, else the date and modality."""
    same = _text(header, "StudyInstanceUID") == study_uid
    return StudyInfo(
        study_uid=study_uid,
        date=day or (sr_date(header) if same else None) or date.min,
        time=(_text(header, "StudyTime") or "")[:6] or None if same else None,
        accession=_text(header, "AccessionNumber") if same else None,
        study_id=_text(header, "StudyID") if same else None,
        description=_text(header, "StudyDescription") if same else None,
        referring_physician=_text(header, "ReferringPhysicianName") if same else None,
        modality=modality or (_text(header, "Modality") if same else None),
    )


def sr_date(header: Dataset) -> date | None:
    text = _text(header, "StudyDate") or ""
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


# Lesion notes (agent.sr.context.image_context) saying the measured image's contrast phase stays unknown.
PHASE_UNKNOWN_NOTES = ("contrast phase unknown", "the measured image's series is neither")


def _lesion_facts(tracked: TrackedTimeline, upto: int) -> dict[str, LesionDicom]:
    """Per lesion id: the first Tracking UID and identifier it had (the baseline's), and where it was
    measured last: finding sites, images and regions."""
    first_uid: dict[str, str] = {}
    first_identifier: dict[str, str] = {}
    facts: dict[str, LesionDicom] = {}
    computed: dict[str, list[tuple[int, str]]] = {}
    unknown: dict[str, list[tuple[int, str]]] = {}
    for t, tp in enumerate(tracked.timepoints[: upto + 1]):
        report = tp.report.report
        for tl in tp.lesions:
            lesion_id = tl.lesion.id
            src = tl.sources[0] if tl.sources else {}
            method = src.get("mean_hu_method")
            if isinstance(method, str):
                computed.setdefault(lesion_id, []).append((t, method))
            for note in dict.fromkeys(tl.notes):
                if note.startswith(PHASE_UNKNOWN_NOTES):
                    unknown.setdefault(lesion_id, []).append((t, note))
            uid = src.get("tracking_uid")
            if isinstance(uid, str) and lesion_id not in first_uid:
                first_uid[lesion_id] = uid
            ident = src.get("tracking_identifier")
            if isinstance(ident, str) and lesion_id not in first_identifier:
                first_identifier[lesion_id] = ident
            obs = next((o for o in tp.report.observations if o.source == src), None)
            group = next(
                (
                    g
                    for g in report.groups
                    if g.tracking_identifier == src.get("tracking_identifier")
                    and g.tracking_uid == src.get("tracking_uid")
                    and [i.sop_instance_uid for i in g.images][:16] == src.get("images")
                ),
                None,
            )
            facts[lesion_id] = LesionDicom(
                tracking_uid=None,
                tracking_identifier=None,
                site_codes=obs.site_codes if obs is not None else (),
                images=group.images if group is not None else (),
                regions=group.regions if group is not None else (),
            )
    return {
        k: replace(
            v,
            tracking_uid=first_uid.get(k),
            tracking_identifier=first_identifier.get(k),
            hu_computed=tuple(computed.get(k, ())),
            phase_unknown=tuple(unknown.get(k, ())),
        )
        for k, v in facts.items()
    }


def tracking_alerts(tracked: TrackedTimeline, n: int) -> list[Alert]:
    """The linking problems of the first ``n`` time points as alerts (``LESION_TRACKING_MISMATCH``, and
    ``LESION_PAIRING_PROVISIONAL`` where a pairing was proposed)."""
    out = []
    for a in tracked.alerts:
        if a.timepoint >= n:
            continue
        definition = CATALOGUE.get(a.code) or CATALOGUE.get("LESION_TRACKING_MISMATCH")
        severity = definition.severity if definition else Severity.CRITICAL
        out.append(Alert(a.code, a.timepoint, severity, a.message, definition.citation if definition else ""))
    return out


@dataclass(frozen=True, slots=True)
class CurrentStudy:
    """The study the report is written into, when the caller holds one of its images (the worker)."""

    study_uid: str
    header: Dataset
    # Its images, evidence of a pre-read (no measurement SR of this study exists yet).
    images: tuple[Instance, ...] = ()
    modality: str | None = None


def build_report(
    tracked: TrackedTimeline,
    assessment: Assessment,
    timeline: Timeline,
    *,
    pre_read: bool,
    current: CurrentStudy | None = None,
    ours: Sequence[SRReport] = (),
    predecessors: Sequence[Instance] = (),
) -> tuple[ResponseReport, list[Instance]]:
    """The ResponseReport and the SR instances it was made from.

    Without ``current``, the newest study of ``tracked`` is the current study (with ``pre_read``, its own
    measurements are left out of ``timeline``). With ``current``, a pre-read is written into that study after
    the studies of ``tracked``. ``ours``: our earlier SRs; those of the current study become predecessors,
    with ``predecessors``.
    """
    n_all = len(tracked.timepoints)
    n = len(timeline.timepoints)
    headers = [read_header(tp.report.report.source) for tp in tracked.timepoints]
    studies = [
        study_info(h, tp.report.context.study_uid or tp.report.report.study_uid or "", tp.report.context.date,
                   tp.report.context.modality)
        for tp, h in zip(tracked.timepoints, headers, strict=True)
    ]  # fmt: skip
    if current is not None:
        head = current.header
        info = study_info(head, current.study_uid, None, current.modality)
        if pre_read:
            studies.append(info)
        else:
            newest = tracked.timepoints[-1].report.context
            studies[-1] = study_info(head, current.study_uid, newest.date, newest.modality)
    else:
        head = headers[-1]
    newest_report = tracked.timepoints[-1].report.report
    patient = PatientInfo(
        name=_text(head, "PatientName") or "",
        patient_id=_text(head, "PatientID") or newest_report.patient_id or "",
        birth_date=_text(head, "PatientBirthDate"),
        sex=_text(head, "PatientSex"),
        character_set=_text(head, "SpecificCharacterSet"),
    )
    current_info = studies[-1]
    # The current study's own SR is not an input of a pre-read written into that study (offline only).
    skip_newest = pre_read and current is None
    evidence: list[Instance] = []
    sources: list[Instance] = []
    for i, tp in enumerate(tracked.timepoints):
        evidence += _images(tp.report.report)
        sr = _instance(tp.report.report)
        if sr is not None and not (skip_newest and i == n_all - 1):
            evidence.append(sr)
            sources.append(sr)
    if pre_read and not any(e.study_uid == current_info.study_uid for e in evidence):
        if current is not None and current.images:
            evidence += current.images
        else:  # no image of the newest study known: its SR stands for it
            sr = _instance(newest_report)
            if sr is not None:
                evidence.append(sr)
    chosen = [
        inst for r in ours if r.study_uid == current_info.study_uid and (inst := _instance(r)) is not None
    ]
    extra = tracking_alerts(tracked, n)
    known = {(a.code, a.timepoint, a.message) for a in assessment.alerts}
    alerts = assessment.alerts + tuple(a for a in extra if (a.code, a.timepoint, a.message) not in known)
    report = ResponseReport(
        patient=patient,
        studies=tuple(studies[:n]),
        current=current_info,
        timeline=timeline,
        assessment=replace(assessment, alerts=alerts),
        lesions=_lesion_facts(tracked, n - 1),
        evidence=tuple(dict.fromkeys(evidence)),
        predecessors=tuple(sorted(dict.fromkeys([*chosen, *predecessors]), key=lambda i: i.sop_instance_uid)),
        pre_read=pre_read,
    )
    return report, sources


# --------------------------------------------------------------------------------------------------------
# Read -> link -> assess -> report


class NoEarlierStudy(ValueError):
    """A pre-read was asked for a patient with a single study."""


@dataclass(frozen=True, slots=True)
class Assembly:
    tracked: TrackedTimeline
    timeline: Timeline
    # The criteria's results and alerts (the report adds the tracking alerts to its own copy).
    assessment: Assessment
    report: ResponseReport
    # The SR instances the report was made from.
    sources: tuple[Instance, ...]


def split_pet(inputs: Sequence[ReportInput]) -> tuple[list[ReportInput], tuple[PetScan, ...]]:
    """PET measurement SRs with SUV measurements become the timeline's PET scans (docs/criteria.md §13.3),
    one per study (the newest SR of a study wins); every other SR stays an anatomic time point."""
    anatomic: list[ReportInput] = []
    by_study: dict[str, PetScan] = {}
    for item in inputs:
        day = item.context.date or item.report.study_date
        scan = pet_scan(item.report, day) if (item.context.modality or "").upper() == "PT" and day else None
        if scan is None:
            anatomic.append(item)
        else:
            by_study[item.context.study_uid or item.report.sop_instance_uid or str(len(by_study))] = scan
    return anatomic, tuple(sorted(by_study.values(), key=lambda scan: scan.date))


def assemble(
    inputs: Sequence[ReportInput],
    context: Context,
    *,
    link_distance_mm: float | None = None,
    options: Options | None = None,
    current: CurrentStudy | None = None,
    pre_read: bool = False,
    ours: Sequence[SRReport] = (),
    predecessors: Sequence[Instance] = (),
    markers: Sequence[MarkerResult] = (),
    confirmed: Mapping[tuple[str, str], tuple[str, str | None, str]] | None = None,
) -> Assembly:
    """Link, assess and build the report. Raises :class:`TrackingError` when the SRs cannot be linked and
    :class:`NoEarlierStudy` when a pre-read has no earlier study.

    Without ``current``: the newest study is current; ``pre_read`` leaves its measurements out. With
    ``current``: the report is final when a measurement SR of that study was read, a pre-read otherwise.
    ``options``: the timeline options (``sr.choi_assume_unknown_phase``). ``markers``: the patient's tumour
    marker results (docs/criteria.md §13.2), added to the timeline. ``confirmed``: the radiologist's pairing
    decisions (``agent.pipeline.tracking.build_timeline``).
    """
    inputs, pet = split_pet(inputs)
    tracked = build_timeline(
        inputs, context, options, link_distance_mm=link_distance_mm, confirmed=confirmed
    )
    full = replace(tracked.timeline(), markers=tuple(sorted(markers, key=lambda r: r.date)), pet=pet)
    if current is not None:
        pre_read = not any(tp.study_uid == current.study_uid for tp in tracked.timepoints)
        timeline = full
    elif pre_read:
        if len(full.timepoints) < 2:
            raise NoEarlierStudy("a pre-read needs at least one earlier study besides the newest one")
        timeline = replace(full, timepoints=full.timepoints[:-1])
    else:
        timeline = full
    assessment = assess_timeline(timeline)
    report, sources = build_report(
        tracked,
        assessment,
        timeline,
        pre_read=pre_read,
        current=current,
        ours=ours,
        predecessors=predecessors,
    )
    return Assembly(tracked, timeline, assessment, report, tuple(sources))


def render(assembly: Assembly, org_root: str, created: datetime | None = None) -> tuple[Any, Dataset]:
    """The response SR and its PDF summary, made at one moment (``created``, else the writer's clock)."""
    from agent.sr import write as sr_write

    when = created or sr_write.clock()
    sr = sr_write.response_sr(assembly.report, org_root=org_root, created=when)
    pdf = sr_write.summary_pdf(
        assembly.report,
        org_root=org_root,
        created=when,
        sources=[sr_write.instance_of(sr), *assembly.sources],
    )
    return sr, pdf
