"""The study worker: claim a ``process_study`` job, run the study, version its output, queue it.

The worker (:class:`Worker`, a periodic task of ``serve``) claims job rows from the durable queue
(``agent.pipeline.jobs``; a job whose worker died is claimed again when its lease expires), keeps the lease
renewed while the study runs, and runs :func:`process_study`:

1. **Classify** (``agent.pipeline.classify``): liver follow-up or ``ignored``.
2. **Priors** (``agent.pipeline.priors``): local index first, then the PACS (through ``agent.peers``).
3. **Assemble** (``agent.pipeline.assemble``, the same code as ``liver-agent sr assess``): read the SRs up to
   the current study's date, link, assess under the criteria chosen for the patient, build the report. The
   current study has a time point only when a measurement SR for it has arrived: then the result is
   ``final``; otherwise a ``pre_read`` (the prior table and the thresholds for this read).
4. **Version and write**: in one transaction record the output version, queue one outbox row per object and
   store destination, and mark the study ``done``.

Idempotence: the inputs (SR instances used, kind, patient context, criteria) are hashed; the same digest
maps to the same output version and its files, whose SOP Instance UIDs the writer derives from the content
under ``uids.org_root``. Re-running a study with unchanged inputs writes and sends nothing new (the outbox
holds one row per destination and SOP Instance UID); changed inputs (the radiologist's SR arrived) make
version n+1, whose SR lists version n in Predecessor Documents Sequence.

An unexpected exception fails the attempt (the job is retried up to ``pipeline.max_attempts``) and is logged
with its stack frames (``agent.log.stack_frames``: file, line, function; never its message or locals).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from agent import __version__, queue
from agent.alerts.store import STUDY_FAILED, raise_operational, record_assessment, resolve_operational
from agent.config import Settings
from agent.db.models import (
    Instance,
    Job,
    LesionPairing,
    OutputVersion,
    Patient,
    ResultKind,
    Series,
    Study,
    StudyState,
    utcnow,
)
from agent.log import get_logger, stack_frames, uid_hash
from agent.markers.store import as_timeline_dicts
from agent.markers.store import load as load_markers
from agent.metrics import PIPELINE_DURATION
from agent.peers import Outcome as PeerOutcome
from agent.peers import PeerError, Receiver
from agent.pipeline import jobs, nodes, outbox
from agent.pipeline.acquisition import AcquisitionIndex, resolve_reports
from agent.pipeline.assemble import (
    Assembly,
    CurrentStudy,
    TrackingError,
    assemble,
    read_header,
    read_reports,
    reader_settings,
    render,
    set_aside_ours,
    timeline_options,
)
from agent.pipeline.classify import choose_context, classify, read_series_facts
from agent.pipeline.health import AlertPolicy
from agent.pipeline.priors import LocalSR, StoreFile, StoreHandler, gather
from agent.pipeline.tracking import ReportInput, timeline_to_dict
from agent.queue import LeaseKeeper, record_outcome
from agent.response.model import Context, MarkerResult
from agent.response.parse import assessment_to_dict
from agent.sr.read import ReportCache
from agent.sr.report import Instance as ReportInstance

log = get_logger(__name__)

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


def load_pairings(session: Session, patient_pk: int) -> dict[tuple[str, str], tuple[str, str | None, str]]:
    """The radiologist's pairing decisions for the patient (``agent.pipeline.tracking.build_timeline``):
    (SR, Tracking UID) of a group, or ("study:" + Study UID, lesion id) of an earlier lesion -> decision."""
    rows = session.scalars(select(LesionPairing).where(LesionPairing.patient_pk == patient_pk)).all()
    return {
        ((f"study:{r.study_uid}", r.lesion_id) if r.lesion_id else (r.sr_sop_uid, r.tracking_uid)): (
            r.decision,
            r.paired_with,
            r.decided_by,
        )
        for r in rows
    }


def inputs_digest(
    kind: str,
    context: Context,
    sr_uids: Sequence[str],
    study_uid: str,
    markers: Sequence[MarkerResult] = (),
    confirmed: Mapping[tuple[str, str], tuple[str, str | None, str]] | None = None,
) -> str:
    data: dict[str, Any] = {
        "agent": __version__,
        "study": study_uid,
        "kind": kind,
        "srs": sorted(sr_uids),
        "primary": context.primary,
        "therapy": list(context.therapy),
        "start": context.treatment_start.isoformat() if context.treatment_start else None,
        "criteria": [c.value for c in context.criteria],
    }
    if markers:  # a new tumour marker result makes a new version
        data["markers"] = as_timeline_dicts(markers)
    if confirmed:  # so does a pairing decision of the radiologist
        data["pairings"] = sorted([*k, v[0], v[1] or ""] for k, v in confirmed.items())
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Written:
    sr_uid: str
    series_uid: str
    objects: tuple[outbox.OutboundObject, ...]


def write_outputs(assembly: Assembly, out_dir: Path, org_root: str) -> Written:
    """The response SR and its PDF summary (``assemble.render``), saved under ``out_dir`` (fsynced)."""
    sr, pdf = render(assembly, org_root)
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
    # Files a retrieved Part 10 file (WADO-RS): the listener's ``store_retrieved``.
    store_file: StoreFile | None = None
    # Sink routing and the PACS_UNREACHABLE delay, from ``settings.alerts``.
    policy: AlertPolicy = field(init=False)
    # SR files already read, for the worker's lifetime (agent.sr.read.ReportCache).
    reports: ReportCache = field(default_factory=ReportCache)

    def __post_init__(self) -> None:
        self.policy = AlertPolicy.from_settings(self.settings)


def read_inputs(
    reports: Sequence[LocalSR],
    settings: Settings,
    lookup: Any,
    current_date: str | None,
    cache: ReportCache | None = None,
) -> tuple[list[ReportInput], list[str]]:
    """Readable measurement SRs up to the current study's date (later studies are not priors)."""
    rules, limits = reader_settings(settings.sr)
    wanted = [r for r in reports if not (current_date and r.study_date and r.study_date > current_date)]
    usable, failures, _ = read_reports(
        [r.path for r in wanted], lookup=lookup, rules=rules, limits=limits, cache=cache
    )
    by_path = {str(r.path): r.sop_uid for r in wanted}
    warnings = [f"{uid_hash(by_path.get(path))}: {reason}" for path, reason in failures.items()]
    return usable, warnings


def process_study(deps: Deps, study_pk: int) -> Outcome:
    """Run the pipeline for one study (the caller owns the job row and the study's final state)."""
    settings, sessions = deps.settings, deps.sessions
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    spool_root = Path(settings.storage.spool_dir)
    with sessions() as session:
        study = session.get(Study, study_pk)
        assert study is not None
        patient_pk, holder = study.patient_pk, study.node
    # A study taken over from a node that is gone (the spool is per node): what the job reads comes from
    # the PACS to this node's listener first.
    me = settings.node.resolved_name()
    org_root = settings.uids.org_root
    try:
        fetched = nodes.fetch_missing(
            sessions,
            settings,
            patient_pk,
            deps.store_handler,
            lambda sop: sop.startswith(org_root),
            store_file=deps.store_file,
        )
    except PeerError as exc:
        raise RetryLater(str(exc), outage=peer_outage(exc)) from exc
    if holder != me:
        nodes.take_over(sessions, study_pk, me)
        if holder is not None:
            log.info("node.took_over", node=me, previous=holder, fetched=fetched)
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
            store_file=deps.store_file,
        )
    except PeerError as exc:
        raise RetryLater(str(exc), outage=peer_outage(exc)) from exc
    timings["find"] = search.find_s
    timings["retrieve"] = search.retrieve_s

    # The acquisition context of every measured image (and the pixels of those without attenuation).
    lookup = AcquisitionIndex(sessions, spool_root, density=settings.sr.density_from_images)
    wanted = [r.path for r in search.reports if not (study_date and (r.study_date or "") > study_date)]
    t0 = time.perf_counter()
    try:
        receiver = Receiver(settings.dicom.ae_title, deps.store_handler, deps.store_file)
        acquired = resolve_reports(lookup, wanted, settings, receiver, deps.reports)
    except PeerError as exc:
        raise RetryLater(str(exc), outage=peer_outage(exc)) from exc
    timings["context"] = time.perf_counter() - t0
    timings["context_query"] = acquired.query_s
    timings["context_retrieve"] = acquired.retrieve_s
    timings["context_read"] = acquired.read_s
    timings["context_local"] = acquired.local_s
    search.warnings.extend(acquired.warnings)

    t0 = time.perf_counter()
    usable, read_warnings = read_inputs(search.reports, settings, lookup, study_date, deps.reports)
    timings["pixels"] = lookup.pixel_s  # the mean HU measured from images, part of "read"
    items, ours = set_aside_ours(usable)
    attrs = dict(facts[0].attributes) if facts else {}
    attrs.update(patient_id=patient_id, issuer=issuer or "")
    context = choose_context(attrs, settings.pipeline.assess)
    timings["read"] = time.perf_counter() - t0
    if not items:
        return Outcome(StudyState.DONE.value, "no measurement SR for this patient yet", timings=timings)

    has_current = any(item.context.study_uid == study_uid for item in items)
    kind = ResultKind.FINAL if has_current else ResultKind.PRE_READ
    sr_uids = [item.report.sop_instance_uid or "" for item in items]
    with sessions() as session:
        markers = load_markers(session, patient_id, issuer or "")
        confirmed = load_pairings(session, patient_pk)
    digest = inputs_digest(kind.value, context, sr_uids, study_uid, markers, confirmed)
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
    if row_img is None:
        return Outcome(StudyState.FAILED.value, "no image of the current study in the spool", timings=timings)
    version = existing.version if existing else (previous.version + 1 if previous else 1)
    predecessors = []
    if previous is not None and previous.version != version:
        predecessors.append(ReportInstance(study_uid, previous.series_uid, SR_CLASS, previous.sr_sop_uid))
    header = read_header(spool_root / row_img[0])
    current = CurrentStudy(
        study_uid,
        header,
        images=(ReportInstance(study_uid, row_img[1], row_img[2], row_img[3]),),
        modality=str(header.get("Modality", "") or "") or None,
    )

    t0 = time.perf_counter()
    try:
        assembly = assemble(
            items,
            context,
            link_distance_mm=settings.sr.link_distance_mm,
            options=timeline_options(settings.sr),
            current=current,
            ours=[o.report for o in ours],
            predecessors=predecessors,
            markers=markers,
            confirmed=confirmed,
        )
    except TrackingError as exc:
        return Outcome(StudyState.FAILED.value, f"tracking: {exc}", timings=timings)
    tracked, assessment = assembly.tracked, assembly.assessment
    timings["assess"] = time.perf_counter() - t0

    t0 = time.perf_counter()
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
        out_dir = Path(settings.pipeline.results_dir) / study_uid / f"v{version}"
        written = write_outputs(assembly, out_dir, org_root)
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
            log.error("pipeline.tick_failed", error=type(exc).__name__, frames=stack_frames(exc))

    def run_one(self) -> bool:
        """Claim and run one job; False when there was nothing to claim."""
        ps = self.deps.settings.pipeline
        sessions = self.deps.sessions
        node = self.deps.settings.node
        me = node.resolved_name()
        nodes.adopt(sessions, me, Path(self.deps.settings.storage.spool_dir), node.dead_after_s)
        with sessions.begin() as session:
            claimed = jobs.claim_lease(
                session, (jobs.PROCESS_STUDY,), ps.lease_s, node=(me, node.dead_after_s)
            )
            if claimed is None:
                return False
            job, lease = claimed
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
        # The lease is renewed while the study runs: a long run is never taken over by another worker.
        with LeaseKeeper(sessions, Job, lease, ps.lease_s) as keeper:
            try:
                outcome = process_study(self.deps, study_pk)
                error = None
            except RetryLater as exc:
                outcome, error, outage = None, str(exc), exc.outage
            except Exception as exc:  # one bad study must not stop the worker; the frames say where it broke
                log.error("pipeline.failed", job=job_id, error=type(exc).__name__, frames=stack_frames(exc))
                outcome, error = None, f"{type(exc).__name__}: {exc}"[:500]
        with sessions.begin() as session:
            row = session.get(Job, job_id)
            assert row is not None
            job = row
            if not queue.holds(session, Job, keeper.current()):
                # The lease ran out (this process stalled) and another worker holds the job: its run counts.
                log.warning("job.lease_lost", job=job_id)
                record_outcome("jobs", "lost")
                return True
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
