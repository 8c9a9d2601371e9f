"""Process one stable study: classify, gather priors, read and track, assess, write, queue for delivery.

The worker (:class:`Worker`, an APScheduler tick in ``serve``) claims ``process_study`` job rows from the
durable queue (``jobs.claim``: ``SKIP LOCKED`` on PostgreSQL, a compare-and-set lease on SQLite; a job whose
worker died is claimed again when its lease expires) and runs :func:`process_study`:

1. **Classify** (``pipeline.classify``): the study is a liver follow-up when one of its image series of an
   accepted modality matches the body-part or description patterns (study or series description), or its
   Procedure Code Sequence holds a configured code, and is not excluded. Otherwise the study is ``ignored``.
   A study holding no image at all (only SRs, e.g. priors we retrieved) is ignored too.
2. **Priors** (``agent.pipeline.priors``): local index first, then the PACS.
3. **Read and track** (``agent.sr.read``, ``agent.pipeline.tracking``): one time point per study up to the
   current one. The current study has a time point only when a measurement SR for it has arrived: then the
   result is ``final``; otherwise it is a ``pre_read`` (the prior table and the thresholds for this read).
4. **Assess** (``agent.response.table``) with the criteria chosen for the patient (:func:`choose_context`).
5. **Write** the response SR and the summary (``agent.sr.write``), then in one transaction record the output
   version, queue one outbox row per object and store destination, and mark the study ``done``.

Idempotence: the inputs (SR instances used, kind, patient context, criteria) are hashed; the same digest
maps to the same output version and its files, whose SOP Instance UIDs the writer derives from the content
under ``uids.org_root``. Re-running a study with unchanged inputs writes and sends nothing new (the outbox
holds one row per destination and SOP Instance UID); changed inputs (the radiologist's SR arrived) make
version n+1, whose SR lists version n in Predecessor Documents Sequence.

Where the patient's primary tumour and therapy come from (:func:`choose_context`): the first rule of
``pipeline.assess.rules`` whose ``match`` patterns all match the patient / study attributes; else, with
``detect_from_study``, words in the study's own text (Study Description, Admitting Diagnoses, Reason for the
Requested Procedure: "GIST", "HCC", "colorectal", an immunotherapy drug, "bevacizumab"); else the defaults.
The criteria then follow docs/criteria.md §0: RECIST 1.1 always; + Choi for GIST; + Chun for CRC on
bevacizumab; + iRECIST on immunotherapy; mRECIST and EASL for HCC. A rule may list its criteria explicitly
instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from agent import __version__
from agent.alerts.store import STUDY_FAILED, raise_operational, record_assessment, resolve_operational
from agent.config import AssessSettings, ClassifySettings, Settings
from agent.db.models import (
    Instance,
    Job,
    OutputVersion,
    Patient,
    ResultKind,
    Series,
    Study,
    StudyState,
    utcnow,
)
from agent.log import get_logger, uid_hash
from agent.metrics import PIPELINE_DURATION
from agent.peers import Outcome as PeerOutcome
from agent.peers import PeerError
from agent.pipeline import jobs, outbox
from agent.pipeline.health import AlertPolicy
from agent.pipeline.priors import LocalSR, StoreHandler, gather
from agent.pipeline.tracking import (
    ReportInput,
    TrackedTimeline,
    TrackingError,
    build_timeline,
    timeline_to_dict,
)
from agent.response.model import Assessment, Context, Criterion, Options, Phase
from agent.response.parse import assessment_to_dict
from agent.response.table import assess_timeline
from agent.sr import write as sr_write
from agent.sr.context import DEFAULT_PHASE_RULES, PhaseRule, SeriesInfo, study_context
from agent.sr.observations import observations
from agent.sr.read import Limits, ReportCache, SRReadError, read_sr, require_measurements
from agent.sr.report import Instance as ReportInstance
from agent.sr.report import LesionDicom, PatientInfo, ResponseReport, StudyInfo
from agent.sr.values import parse_da

log = get_logger(__name__)

IMAGE_MODALITIES_DEFAULT = ("CT", "MR")
_HEADER_TAGS = [
    "StudyDescription",
    "SeriesDescription",
    "BodyPartExamined",
    "ProcedureCodeSequence",
    "AdmittingDiagnosesDescription",
    "RequestAttributesSequence",
    "ClinicalTrialProtocolID",
    "IssuerOfPatientID",
    "AccessionNumber",
    "SliceThickness",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "Modality",
]


# --------------------------------------------------------------------------------------------------------
# 1. Classification


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    series_uid: str
    modality: str
    body_part: str
    study_description: str
    series_description: str
    procedure_codes: tuple[str, ...]
    attributes: dict[str, str]
    slice_thickness_mm: str | None
    contrast_agent: str | None
    contrast_route: str | None


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "") if ds is not None else ""
    if isinstance(value, pydicom.multival.MultiValue | list):
        return " ".join(str(v) for v in value)
    return str(value or "")


def read_series_facts(path: Path, series_uid: str, modality: str) -> SeriesFacts:
    """The classification and context attributes of a series, from the header of one of its files."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception:  # an unreadable file classifies on what the index knows
        ds = None
    codes: list[str] = []
    for item in (ds.get("ProcedureCodeSequence", []) if ds is not None else []) or []:
        value = str(item.get("CodeValue", "") or "")
        scheme = str(item.get("CodingSchemeDesignator", "") or "")
        if value:
            codes += [value, f"{scheme}:{value}"]
    reason = ""
    for item in (ds.get("RequestAttributesSequence", []) if ds is not None else []) or []:
        reason += " " + _text(item, "ReasonForTheRequestedProcedure")
        reason += " " + _text(item, "RequestedProcedureDescription")
    attrs = {
        "study_description": _text(ds, "StudyDescription"),
        "admitting_diagnoses": _text(ds, "AdmittingDiagnosesDescription"),
        "reason_for_procedure": reason.strip(),
        "clinical_trial_protocol_id": _text(ds, "ClinicalTrialProtocolID"),
        "accession_number": _text(ds, "AccessionNumber"),
        "procedure_code": " ".join(codes),
    }
    thickness = _text(ds, "SliceThickness") or None
    return SeriesFacts(
        series_uid=series_uid,
        modality=(_text(ds, "Modality") or modality or "").upper(),
        body_part=_text(ds, "BodyPartExamined"),
        study_description=attrs["study_description"],
        series_description=_text(ds, "SeriesDescription"),
        procedure_codes=tuple(codes),
        attributes=attrs,
        slice_thickness_mm=thickness,
        contrast_agent=_text(ds, "ContrastBolusAgent") or None,
        contrast_route=_text(ds, "ContrastBolusRoute") or None,
    )


def _search(pattern: str, text: str) -> bool:
    return bool(pattern) and bool(text) and re.search(pattern, text, re.IGNORECASE) is not None


def classify(series: Sequence[SeriesFacts], rules: ClassifySettings) -> tuple[bool, str]:
    """(liver follow-up?, reason)."""
    modalities = {m.upper() for m in rules.modalities}
    images = [s for s in series if s.modality in modalities]
    if not images:
        return False, "no image series of an accepted modality"
    codes = set(rules.procedure_codes)
    for s in images:
        descriptions = f"{s.study_description} {s.series_description}"
        if _search(rules.exclude_pattern, descriptions):
            continue
        if codes and codes.intersection(s.procedure_codes):
            return True, "procedure code"
        if _search(rules.body_part_pattern, s.body_part.replace("_", " ")):
            return True, "body part"
        if _search(rules.description_pattern, descriptions):
            return True, "description"
    return False, "no series matches the liver follow-up rules"


# --------------------------------------------------------------------------------------------------------
# 4. Patient context and criteria (docs/criteria.md §0)

_PRIMARY_WORDS = (
    ("GIST", r"\bGIST\b|gastro-?intestinal stromal"),
    ("HCC", r"\bHCC\b|hepatocellular"),
    ("CRC", r"\bCRC\b|\bCRLM\b|colo-?rectal|\bcolon\b|\brectal\b"),
)
_BEVACIZUMAB = r"bevacizumab|avastin"


def choose_context(attrs: dict[str, str], settings: AssessSettings) -> Context:
    """The patient's primary, therapy and criteria from the config rules, the study's text or defaults."""
    primary: str | None = None
    therapy: list[str] | None = None
    start: date | None = None
    explicit: list[str] | None = None
    for rule in settings.rules:
        if all(_search(pattern, attrs.get(key, "")) for key, pattern in rule.match.items()):
            primary, therapy, explicit = rule.primary, rule.therapy, rule.criteria
            if rule.treatment_start:
                start = date.fromisoformat(rule.treatment_start)
            break
    text = " ".join(
        attrs.get(k, "") for k in ("study_description", "admitting_diagnoses", "reason_for_procedure")
    )
    if settings.detect_from_study:
        if primary is None:
            primary = next((name for name, pattern in _PRIMARY_WORDS if _search(pattern, text)), None)
        if therapy is None:
            found = [t for t in settings.immunotherapy if _search(rf"\b{re.escape(t)}\b", text)]
            if _search(_BEVACIZUMAB, text):
                found.append("bevacizumab")
            therapy = found or None
    primary = primary or settings.default_primary
    therapy = therapy if therapy is not None else list(settings.default_therapy)
    if explicit:
        criteria = tuple(dict.fromkeys(Criterion(c) for c in explicit))
    else:
        criteria = default_criteria(primary, therapy, settings.immunotherapy)
    return Context(treatment_start=start, primary=primary, therapy=tuple(therapy), criteria=criteria)


def default_criteria(
    primary: str, therapy: Sequence[str], immunotherapy: Sequence[str]
) -> tuple[Criterion, ...]:
    """docs/criteria.md §0: RECIST 1.1; + Choi (GIST), Chun (CRC, bevacizumab), iRECIST (IO), mRECIST/EASL."""
    p = primary.upper()
    lowered = {t.lower() for t in therapy}
    out = [Criterion.RECIST]
    if p == "GIST":
        out.append(Criterion.CHOI)
    if p in ("CRC", "CRLM") and any(re.search(_BEVACIZUMAB, t) for t in lowered):
        out.append(Criterion.CHUN)
    if lowered.intersection(i.lower() for i in immunotherapy):
        out.append(Criterion.IRECIST)
    if p == "HCC":
        out += [Criterion.MRECIST, Criterion.EASL]
    return tuple(out)


# --------------------------------------------------------------------------------------------------------
# Digest of the inputs


def inputs_digest(kind: str, context: Context, sr_uids: Sequence[str], study_uid: str) -> str:
    data = {
        "agent": __version__,
        "study": study_uid,
        "kind": kind,
        "srs": sorted(sr_uids),
        "primary": context.primary,
        "therapy": list(context.therapy),
        "start": context.treatment_start.isoformat() if context.treatment_start else None,
        "criteria": [c.value for c in context.criteria],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------------
# 5. Writing (the SR writer, agent.sr.write)

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


@dataclass(frozen=True, slots=True)
class CurrentImage:
    """One image of the current study: its header gives the patient banner and the study facts."""

    path: Path
    series_uid: str
    sop_class_uid: str
    sop_uid: str


def _study_info(ds: Any, study_uid: str, fallback: date | None) -> StudyInfo:
    return StudyInfo(
        study_uid=study_uid,
        date=parse_da(_text(ds, "StudyDate")) or fallback or date.today(),
        time=_text(ds, "StudyTime") or None,
        accession=_text(ds, "AccessionNumber") or None,
        study_id=_text(ds, "StudyID") or None,
        description=_text(ds, "StudyDescription") or None,
        referring_physician=_text(ds, "ReferringPhysicianName") or None,
        modality=_text(ds, "Modality") or None,
    )


def build_report(
    tracked: TrackedTimeline,
    assessment: Assessment,
    current: CurrentImage,
    study_uid: str,
    pre_read: bool,
    predecessor: ReportInstance | None,
) -> ResponseReport:
    """The writer's input: banner and current study from the current image, DICOM facts per lesion."""
    ds = pydicom.dcmread(current.path, stop_before_pixels=True)
    patient = PatientInfo(
        name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        birth_date=_text(ds, "PatientBirthDate") or None,
        sex=_text(ds, "PatientSex") or None,
        character_set=_text(ds, "SpecificCharacterSet") or None,
    )
    studies = tuple(
        StudyInfo(study_uid=tp.study_uid or "", date=tp.timepoint.date, modality=tp.timepoint.modality)
        for tp in tracked.timepoints
    )
    current_info = _study_info(ds, study_uid, None)
    if not pre_read:
        studies = (*studies[:-1], current_info)
    evidence: list[ReportInstance] = [
        ReportInstance(study_uid, current.series_uid, current.sop_class_uid, current.sop_uid)
    ]
    for tp in tracked.timepoints:
        r = tp.report.report
        if r.study_uid and r.series_uid and r.sop_instance_uid and tp.study_uid != study_uid:
            evidence.append(ReportInstance(r.study_uid, r.series_uid, r.sop_class_uid, r.sop_instance_uid))
        for ev in r.evidence:
            if ev.study_uid and ev.series_uid and ev.sop_instance_uid and ev.sop_class_uid:
                evidence.append(
                    ReportInstance(ev.study_uid, ev.series_uid, ev.sop_class_uid, ev.sop_instance_uid)
                )
    # Per lesion: the first Tracking UID seen (the baseline's), and the current group's site and images.
    first_uid: dict[str, tuple[str | None, str | None]] = {}
    for tp in tracked.timepoints:
        for tl in tp.lesions:
            src = tl.sources[0] if tl.sources else {}
            first_uid.setdefault(
                tl.lesion.id, (_opt_str(src.get("tracking_uid")), _opt_str(src.get("tracking_identifier")))
            )
    lesions: dict[str, LesionDicom] = {}
    if not pre_read and tracked.timepoints:
        tp = tracked.timepoints[-1]
        groups = tp.report.report.groups
        for tl in tp.lesions:
            src = tl.sources[0] if tl.sources else {}
            group = next(
                (
                    g
                    for g in groups
                    if (g.tracking_uid and g.tracking_uid == src.get("tracking_uid"))
                    or (not g.tracking_uid and g.tracking_identifier == src.get("tracking_identifier"))
                ),
                None,
            )
            uid, ident = first_uid.get(tl.lesion.id, (None, None))
            lesions[tl.lesion.id] = LesionDicom(
                tracking_uid=uid,
                tracking_identifier=ident,
                site_codes=tuple(group.finding_sites) if group else (),
                images=tuple(group.images) if group else (),
                regions=tuple(group.regions) if group else (),
            )
    return ResponseReport(
        patient=patient,
        studies=studies,
        current=current_info,
        timeline=tracked.timeline(),
        assessment=assessment,
        lesions=lesions,
        evidence=tuple(dict.fromkeys(evidence)),
        predecessors=(predecessor,) if predecessor else (),
        pre_read=pre_read,
    )


def _opt_str(value: object) -> str | None:
    return str(value) if value else None


@dataclass(frozen=True, slots=True)
class Written:
    sr_uid: str
    series_uid: str
    objects: tuple[outbox.OutboundObject, ...]


def write_outputs(report: ResponseReport, out_dir: Path, org_root: str) -> Written:
    """The response SR and its PDF summary (agent.sr.write), saved under ``out_dir`` (fsynced)."""
    created = sr_write.clock()  # one moment for the SR and its summary
    sr = sr_write.response_sr(report, org_root=org_root, created=created)
    pdf = sr_write.summary_pdf(report, org_root=org_root, created=created, sources=[sr_write.instance_of(sr)])
    out_dir.mkdir(parents=True, exist_ok=True)
    objects = []
    for ds in (sr, pdf):
        path = out_dir / f"{ds.SOPInstanceUID}.dcm"
        tmp = path.with_suffix(".part")
        ds.save_as(tmp, enforce_file_format=True)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
        objects.append(outbox.OutboundObject(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return Written(str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID), tuple(objects))


# --------------------------------------------------------------------------------------------------------
# The whole run


class RetryLater(Exception):
    """A problem with a peer: the job goes back to the queue.

    ``outage``: the peer could not be reached or was busy (no association, timeout, abort, a transient
    status); such a retry does not count against ``pipeline.max_attempts``, so an outage of any length never
    makes a study fail. Otherwise (the peer refused for good) the retry is one of the job's attempts.
    """

    def __init__(self, message: str, *, outage: bool = False) -> None:
        super().__init__(message)
        self.outage = outage


def peer_outage(exc: PeerError) -> bool:
    """The peer was unreachable or busy, as opposed to refusing the request."""
    return exc.outcome is PeerOutcome.TRANSIENT


@dataclass
class Outcome:
    state: str
    reason: str = ""
    kind: str | None = None
    version: int | None = None
    new_version: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    # Outbox rows added by this run.
    queued: int = 0


@dataclass
class Deps:
    settings: Settings
    sessions: sessionmaker[Session]
    store_handler: StoreHandler | None = None
    # Sink routing and the PACS_UNREACHABLE delay, from ``settings.alerts``.
    policy: AlertPolicy = field(init=False)
    # SR files already read, for the worker's lifetime (agent.sr.read.ReportCache).
    reports: ReportCache = field(default_factory=ReportCache)

    def __post_init__(self) -> None:
        self.policy = AlertPolicy.from_settings(self.settings)


def _decimal(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value else None
    except ArithmeticError:
        return None


def _lookup(sessions: sessionmaker[Session], spool_root: Path) -> Any:
    cache: dict[str, SeriesInfo | None] = {}

    def lookup(study_uid: str | None, series_uid: str | None, sop_uid: str | None) -> SeriesInfo | None:
        key = series_uid or sop_uid or ""
        if key in cache:
            return cache[key]
        with sessions() as session:
            query = select(
                Series.series_uid,
                Series.modality,
                Series.description,
                Study.study_uid,
                Study.study_date,
                select(func.min(Instance.path)).where(Instance.series_pk == Series.id).scalar_subquery(),
            )
            query = query.join(Study, Study.id == Series.study_pk)
            if series_uid:
                query = query.where(Series.series_uid == series_uid)
            elif sop_uid:
                query = query.join(Instance, Instance.series_pk == Series.id).where(
                    Instance.sop_uid == sop_uid
                )
            else:
                return None
            row = session.execute(query).first()
        info = None
        if row is not None:
            # Slice thickness and contrast are not in the index: one header of the series gives them.
            facts = (
                read_series_facts(spool_root / row[5], row.series_uid, row.modality or "") if row[5] else None
            )
            info = SeriesInfo(
                slice_thickness_mm=_decimal(facts.slice_thickness_mm) if facts else None,
                contrast_agent=facts.contrast_agent if facts else None,
                contrast_route=facts.contrast_route if facts else None,
                study_uid=row.study_uid,
                series_uid=row.series_uid,
                study_date=parse_da(row.study_date),
                modality=row.modality,
                series_description=row.description,
            )
        cache[key] = info
        return info

    return lookup


def read_inputs(
    reports: Sequence[LocalSR],
    settings: Settings,
    lookup: Any,
    current_date: str | None,
    cache: ReportCache | None = None,
) -> tuple[list[ReportInput], list[str]]:
    """Readable measurement SRs up to the current study's date (later studies are not priors).

    With ``cache`` (the worker's), an SR file read by an earlier run is not parsed again.
    """
    sr = settings.sr
    rules = [PhaseRule(r.pattern, Phase(r.phase)) for r in sr.phase_rules] or list(DEFAULT_PHASE_RULES)
    limits = Limits(
        max_depth=sr.max_depth, max_items=sr.max_items, max_file_bytes=int(sr.max_file_mb * 1024 * 1024)
    )
    items: list[ReportInput] = []
    warnings: list[str] = []
    for local in reports:
        if current_date and local.study_date and local.study_date > current_date:
            continue
        try:
            report = require_measurements(read_sr(local.path, limits=limits, cache=cache))
        except SRReadError as exc:
            warnings.append(f"{uid_hash(local.sop_uid)}: {exc.reason}")
            continue
        ctx = study_context(report, lookup, rules)
        obs, obs_warnings = observations(report, lookup, rules)
        warns = list(report.warnings) + list(ctx.warnings) + obs_warnings
        items.append(ReportInput(report, ctx, tuple(obs), tuple(dict.fromkeys(warns))))
    return items, warnings


def process_study(deps: Deps, study_pk: int) -> Outcome:
    """Run the pipeline for one study (the caller owns the job row and the study's final state)."""
    settings, sessions = deps.settings, deps.sessions
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    spool_root = Path(settings.storage.spool_dir)
    with sessions() as session:
        study = session.get(Study, study_pk)
        assert study is not None
        patient = session.get(Patient, study.patient_pk)
        assert patient is not None
        rows = session.execute(
            select(Series.series_uid, Series.modality, func.min(Instance.path))
            .join(Instance, Instance.series_pk == Series.id)
            .where(Series.study_pk == study_pk)
            .group_by(Series.series_uid, Series.modality)
        ).all()
        study_uid, study_date = study.study_uid, study.study_date
        patient_id, issuer = patient.patient_id, patient.issuer
    org_root = settings.uids.org_root
    facts = [
        read_series_facts(spool_root / path, series_uid, modality or "")
        for series_uid, modality, path in rows
        if modality and modality.upper() != "SR"
    ]
    liver, reason = classify(facts, settings.pipeline.classify)
    timings["classify"] = time.perf_counter() - t0
    if not liver:
        return Outcome(StudyState.IGNORED.value, reason, timings=timings)

    try:
        search = gather(
            sessions,
            settings,
            patient_pk=study.patient_pk,
            patient_id=patient_id,
            issuer=issuer,
            study_uid=study_uid,
            study_date=study_date,
            store_handler=deps.store_handler,
        )
    except PeerError as exc:
        raise RetryLater(str(exc), outage=peer_outage(exc)) from exc
    timings["find"] = search.find_s
    timings["retrieve"] = search.retrieve_s

    t0 = time.perf_counter()
    lookup = _lookup(sessions, spool_root)
    items, read_warnings = read_inputs(search.reports, settings, lookup, study_date, deps.reports)
    attrs = dict(facts[0].attributes) if facts else {}
    attrs.update(patient_id=patient_id, issuer=issuer or "")
    context = choose_context(attrs, settings.pipeline.assess)
    timings["read"] = time.perf_counter() - t0
    if not items:
        return Outcome(StudyState.DONE.value, "no measurement SR for this patient yet", timings=timings)

    t0 = time.perf_counter()
    try:
        tracked = build_timeline(
            items,
            context,
            link_distance_mm=settings.sr.link_distance_mm,
            options=Options(choi_assume_unknown_phase=settings.sr.choi_assume_unknown_phase),
        )
    except TrackingError as exc:
        return Outcome(StudyState.FAILED.value, f"tracking: {exc}", timings=timings)
    has_current = any(tp.study_uid == study_uid for tp in tracked.timepoints)
    kind = ResultKind.FINAL if has_current else ResultKind.PRE_READ
    assessment = assess_timeline(tracked.timeline())
    timings["assess"] = time.perf_counter() - t0

    sr_uids = [
        w.report.sop_instance_uid or "" for tp in tracked.timepoints for w in [tp.report, *tp.superseded]
    ]
    digest = inputs_digest(kind.value, context, sr_uids, study_uid)
    t0 = time.perf_counter()
    with sessions() as session:
        existing = session.execute(
            select(OutputVersion).where(OutputVersion.study_pk == study_pk, OutputVersion.digest == digest)
        ).scalar_one_or_none()
        previous = session.execute(
            select(OutputVersion)
            .where(OutputVersion.study_pk == study_pk)
            .order_by(OutputVersion.version.desc())
            .limit(1)
        ).scalar_one_or_none()
        row_img = session.execute(
            select(Instance.path, Series.series_uid, Instance.sop_class_uid, Instance.sop_uid)
            .join(Series, Series.id == Instance.series_pk)
            .where(Series.study_pk == study_pk, Series.modality != "SR")
            .order_by(Instance.id)
            .limit(1)
        ).first()
    current = CurrentImage(spool_root / row_img[0], row_img[1], row_img[2], row_img[3]) if row_img else None
    version = existing.version if existing else (previous.version + 1 if previous else 1)
    reuse = existing is not None and all(Path(o).is_file() for o in json.loads(existing.detail)["objects"])
    if reuse:
        assert existing is not None
        info = json.loads(existing.detail)
        written = Written(
            existing.sr_sop_uid,
            existing.series_uid,
            tuple(
                outbox.OutboundObject(Path(path), cls, uid)
                for path, cls, uid in zip(info["objects"], info["classes"], info["uids"], strict=True)
            ),
        )
    else:
        if current is None:
            return Outcome(
                StudyState.FAILED.value, "no image of the current study in the spool", timings=timings
            )
        predecessor = None
        if previous is not None and previous.version != version:
            predecessor = ReportInstance(study_uid, previous.series_uid, SR_CLASS, previous.sr_sop_uid)
        report = build_report(
            tracked, assessment, current, study_uid, kind is ResultKind.PRE_READ, predecessor
        )
        out_dir = Path(settings.pipeline.results_dir) / study_uid / f"v{version}"
        written = write_outputs(report, out_dir, org_root)
    timings["write"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    own = [i for i, tp in enumerate(tracked.timepoints) if tp.study_uid == study_uid]
    own_tp = own[-1] if own else len(tracked.timepoints) - 1
    detail = {
        "kind": kind.value,
        "context": {"primary": context.primary, "therapy": list(context.therapy)},
        "criteria": [c.value for c in context.criteria],
        "inputs": sorted(sr_uids),
        "warnings": read_warnings + search.warnings,
        "objects": [str(o.path) for o in written.objects],
        "classes": [o.sop_class_uid for o in written.objects],
        "uids": [o.sop_uid for o in written.objects],
        # Read back by the alerts and the web pages (agent/alerts/results.py).
        "assessment": assessment_to_dict(assessment),
        "timeline": timeline_to_dict(tracked),
        "timepoint": own_tp,
    }
    with sessions.begin() as session:
        row = session.execute(
            select(OutputVersion).where(OutputVersion.study_pk == study_pk, OutputVersion.digest == digest)
        ).scalar_one_or_none()
        new_version = row is None
        if row is None:  # (a re-run with the same inputs keeps the existing version)
            row = OutputVersion(
                study_pk=study_pk,
                version=version,
                kind=kind.value,
                digest=digest,
                current=True,
                series_uid=written.series_uid,
                sr_sop_uid=written.sr_uid,
                summary_sop_uid=written.objects[-1].sop_uid if len(written.objects) > 1 else None,
                detail=json.dumps(detail),
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
        session.execute(
            update(OutputVersion)
            .where(OutputVersion.study_pk == study_pk, OutputVersion.id != row.id)
            .values(current=False)
        )
        row.current = True
        record_assessment(
            session,
            study_pk,
            assessment,
            routing=deps.policy.routing,
            timepoint=own_tp,
            result_version=row.version,
        )
        destinations = outbox.store_destinations(settings.peers)
        queued = outbox.queue(session, destinations, written.objects, study_pk, row.id)
    timings["queue"] = time.perf_counter() - t0
    log.info(
        "pipeline.output",
        study=uid_hash(study_uid),
        kind=kind.value,
        version=version,
        new_version=new_version,
        queued=queued,
        timepoints=len(tracked.timepoints),
        criteria=",".join(c.value for c in context.criteria),
    )
    return Outcome(
        StudyState.DONE.value,
        kind=kind.value,
        version=version,
        new_version=new_version,
        timings=timings,
        queued=queued,
    )


# --------------------------------------------------------------------------------------------------------
# The worker


def _study_subject(study_pk: int) -> str:
    return f"study:{study_pk}"


class Worker:
    """Claims ``process_study`` jobs and runs them; the scheduler calls :meth:`tick`.

    A study whose processing fails for good raises the operational alert ``STUDY_FAILED`` in the alerts
    store (subject ``study:<pk>``); a later successful run of the study resolves it. ``on_output`` (optional)
    is called after a run queued objects for delivery (the outbox's wake-up).
    """

    def __init__(self, deps: Deps, on_output: Callable[[], None] | None = None) -> None:
        self.deps = deps
        self.on_output = on_output

    def _study_failed(self, session: Session, study_pk: int, reason: str) -> None:
        raise_operational(
            session,
            STUDY_FAILED,
            f"Study processing failed: {reason[:300]}; 'liver-agent reprocess STUDY_UID' runs it again",
            subject=_study_subject(study_pk),
            routing=self.deps.policy.routing,
            study_pk=study_pk,
        )

    def tick(self) -> None:
        try:
            while self.run_one():
                pass
        except Exception as exc:  # the next tick retries; the scheduler must keep running
            log.error("pipeline.tick_failed", error=type(exc).__name__, detail=str(exc)[:200])

    def run_one(self) -> bool:
        """Claim and run one job; False when there was nothing to claim."""
        ps = self.deps.settings.pipeline
        sessions = self.deps.sessions
        with sessions.begin() as session:
            job = jobs.claim(session, (jobs.PROCESS_STUDY,), ps.lease_s)
            if job is None:
                return False
            job_id, study_pk, attempts = job.id, job.study_pk, job.attempts
            if study_pk is not None:
                session.execute(
                    update(Study)
                    .where(Study.id == study_pk, Study.state != StudyState.RECEIVING.value)
                    .values(state=StudyState.PROCESSING.value, updated_at=utcnow())
                )
        assert study_pk is not None
        started = time.perf_counter()
        outage = False
        try:
            outcome = process_study(self.deps, study_pk)
            error = None
        except RetryLater as exc:
            outcome, error, outage = None, str(exc), exc.outage
        except Exception as exc:  # one bad study must not stop the worker
            log.error("pipeline.failed", job=job_id, error=type(exc).__name__, detail=str(exc)[:300])
            outcome, error = None, f"{type(exc).__name__}: {exc}"[:500]
        with sessions.begin() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if outcome is None and outage:  # never fails the study: back-off, attempts untouched
                jobs.retry_after_outage(session, job, error or "", ps.retry_after_s, ps.outage_retry_max_s)
                final_state = StudyState.STABLE.value
            elif outcome is None and attempts < ps.max_attempts:
                job.outage_retries = 0
                jobs.retry_later(session, job, error or "", ps.retry_after_s)
                final_state = StudyState.STABLE.value
            elif outcome is None:
                jobs.finish(session, job, error or "failed")
                final_state = StudyState.FAILED.value
                self._study_failed(session, study_pk, f"failed after {attempts} attempts: {error}")
            else:
                failed = outcome.state == StudyState.FAILED.value
                jobs.finish(session, job, outcome.reason if failed else None)
                final_state = outcome.state
                if failed:
                    self._study_failed(session, study_pk, outcome.reason)
                else:
                    resolve_operational(session, STUDY_FAILED, _study_subject(study_pk))
            # An instance that arrived meanwhile left the study receiving: the next run will see it.
            session.execute(
                update(Study)
                .where(Study.id == study_pk, Study.state == StudyState.PROCESSING.value)
                .values(state=final_state, updated_at=utcnow())
            )
        if outcome is not None and outcome.queued and self.on_output is not None:
            self.on_output()
        PIPELINE_DURATION.labels(stage="total").observe(time.perf_counter() - started)
        for stage, seconds in outcome.timings.items() if outcome else []:
            PIPELINE_DURATION.labels(stage=stage).observe(seconds)
        log.info(
            "pipeline.finished",
            job=job_id,
            state=final_state,
            reason=(outcome.reason if outcome else error or "")[:200],
            ms=round((time.perf_counter() - started) * 1000, 1),
            **{f"{k}_ms": round(v * 1000, 1) for k, v in (outcome.timings.items() if outcome else [])},
        )
        return True
