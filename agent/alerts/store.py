"""The alerts store: every assessment alert (docs/criteria.md §9) and every operational alert is one row.

An alert is identified by its ``key``: ``study:<study_pk>:<code>:<timepoint>`` for an assessment alert,
``op:<code>:<subject>`` for an operational one. Re-running a study therefore updates its rows: an alert
produced again keeps its row (and its acknowledgement unless it became more severe), an alert no longer
produced is marked ``resolved``, and one that comes back is reopened. Each new revision of an alert (first
raised, more severe, reopened) gets one durable delivery row per sink routed for its severity; the delivery
loop (``agent.alerts.delivery``) sends them.

Operational alerts: ``DELIVERY_GAVE_UP`` (an alert delivery was given up, or a result is still undelivered
to a DICOM destination after ``outbox.give_up_after_s``), ``DELIVERY_REFUSED`` (a DICOM destination refused
one of our objects with a failure status: the object is quarantined), ``PACS_UNREACHABLE`` (a peer has not
answered for ``alerts.pacs_unreachable_after_s``), ``STUDY_FAILED`` (a study's processing failed for good),
``DISK_LOW`` (spool below ``alerts.disk_low_mb``). Callers raise them with ``raise_operational`` and clear
them with ``resolve_operational``.

This module never talks to the network; callers own the transaction (nothing here commits).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from agent.alerts.models import (
    SEVERITY_RANK,
    AlertDelivery,
    AlertRecord,
    AlertSource,
    AlertState,
    DeliveryState,
    Severity,
)
from agent.db.models import Study, utcnow
from agent.log import get_logger, uid_hash
from agent.metrics import ALERTS_RAISED
from agent.response.model import Assessment
from agent.response.parse import alert_to_dict

log = get_logger(__name__)

# Operational alert codes.
DELIVERY_GAVE_UP = "DELIVERY_GAVE_UP"
DELIVERY_REFUSED = "DELIVERY_REFUSED"
PACS_UNREACHABLE = "PACS_UNREACHABLE"
STUDY_FAILED = "STUDY_FAILED"
DISK_LOW = "DISK_LOW"

OPERATIONAL_DEFAULTS: dict[str, Severity] = {
    DELIVERY_GAVE_UP: Severity.CRITICAL,
    DELIVERY_REFUSED: Severity.CRITICAL,
    PACS_UNREACHABLE: Severity.CRITICAL,
    STUDY_FAILED: Severity.WARNING,
    DISK_LOW: Severity.WARNING,
}

Routing = Mapping[str, frozenset[str]]
"""Sink name -> the severities it receives."""


@dataclass
class Changes:
    """What a call changed: alert ids created, raised again (new revision), updated in place, resolved."""

    created: list[int] = field(default_factory=list)
    raised_again: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    deliveries: int = 0


def routing_from_settings(sinks: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """``alerts.sinks`` settings -> routing (each sink's ``severities``)."""
    return {name: frozenset(s.severities) for name, s in sinks.items()}


def _severity(value: object) -> str:
    text = str(getattr(value, "value", value)).lower()
    if text not in SEVERITY_RANK:
        raise ValueError(f"unknown severity {value!r}")
    return text


def _alert_dicts(assessment: Assessment | Mapping[str, Any]) -> list[dict[str, Any]]:
    if isinstance(assessment, Assessment):
        return [alert_to_dict(a) for a in assessment.alerts]
    return [dict(a) for a in assessment.get("alerts", [])]


def _timepoint_count(assessment: Assessment | Mapping[str, Any]) -> int | None:
    if isinstance(assessment, Assessment):
        return max((len(r.timepoints) for r in assessment.results), default=None)
    counts = [
        len(v["timepoint_responses"])
        for k, v in assessment.items()
        if k != "alerts" and isinstance(v, Mapping) and isinstance(v.get("timepoint_responses"), list)
    ]
    return max(counts, default=None)


def study_alert_key(study_pk: int, code: str, timepoint: int | None) -> str:
    return f"study:{study_pk}:{code}:{'-' if timepoint is None else timepoint}"


def operational_key(code: str, subject: str) -> str:
    return f"op:{code}:{subject}"[:200]


def record_assessment(
    session: Session,
    study_pk: int,
    assessment: Assessment | Mapping[str, Any],
    *,
    routing: Routing,
    timepoint: int | None = None,
    result_version: int | None = None,
    now: datetime | None = None,
) -> Changes:
    """Persist the alerts of ``assessment`` (an ``Assessment`` or its JSON) for the study ``study_pk``.

    Kept: alerts of the study's own time point ``timepoint`` (default: the last one), of the baseline
    (index 0: baseline problems affect every later read) and alerts without a time point. Earlier
    follow-ups' alerts belong to those studies. Alerts of the study from an earlier run that this run no
    longer produces are resolved.
    """
    now = now or utcnow()
    study = session.get(Study, study_pk)
    if study is None:
        raise ValueError(f"no study with primary key {study_pk}")
    if timepoint is None:
        count = _timepoint_count(assessment)
        timepoint = None if count is None else count - 1
    changes = Changes()
    seen: set[str] = set()
    for raw in _alert_dicts(assessment):
        tp = raw.get("timepoint")
        if tp is not None and tp not in (0, timepoint):
            continue
        key = study_alert_key(study_pk, str(raw["code"]), tp)
        if key in seen:
            continue
        seen.add(key)
        _upsert(
            session,
            key,
            changes,
            routing,
            now,
            source=AlertSource.ASSESSMENT,
            study_pk=study_pk,
            patient_pk=study.patient_pk,
            code=str(raw["code"]),
            severity=_severity(raw["severity"]),
            timepoint=tp,
            subject=None,
            message=str(raw.get("message") or ""),
            citation=str(raw.get("citation") or ""),
            result_version=result_version,
        )
    stale = session.scalars(
        select(AlertRecord).where(
            AlertRecord.study_pk == study_pk,
            AlertRecord.source == AlertSource.ASSESSMENT.value,
            AlertRecord.state != AlertState.RESOLVED.value,
        )
    ).all()
    for row in stale:
        if row.key not in seen:
            row.state = AlertState.RESOLVED.value
            row.resolved_at = now
            row.updated_at = now
            changes.resolved.append(row.id)
    session.flush()
    log.info(
        "alerts.recorded",
        study=uid_hash(study.study_uid),
        created=len(changes.created),
        raised_again=len(changes.raised_again),
        updated=len(changes.updated),
        resolved=len(changes.resolved),
        deliveries=changes.deliveries,
    )
    return changes


def raise_operational(
    session: Session,
    code: str,
    message: str,
    *,
    subject: str,
    routing: Routing,
    severity: Severity | str | None = None,
    study_pk: int | None = None,
    exclude_sinks: Iterable[str] = (),
    now: datetime | None = None,
) -> AlertRecord:
    """Raise (or keep raised) the operational alert ``code`` about ``subject``; one open row per pair.

    ``message`` must carry no patient data (it is delivered and logged). ``exclude_sinks``: sinks that must
    not receive it (the sink whose own delivery failed).
    """
    now = now or utcnow()
    sev = _severity(severity or OPERATIONAL_DEFAULTS.get(code, Severity.WARNING))
    patient_pk = None
    if study_pk is not None:
        study = session.get(Study, study_pk)
        patient_pk = study.patient_pk if study is not None else None
    changes = Changes()
    return _upsert(
        session,
        operational_key(code, subject),
        changes,
        routing,
        now,
        source=AlertSource.OPERATIONAL,
        study_pk=study_pk,
        patient_pk=patient_pk,
        code=code,
        severity=sev,
        timepoint=None,
        subject=subject,
        message=message,
        citation="",
        result_version=None,
        exclude_sinks=frozenset(exclude_sinks),
    )


def resolve_operational(session: Session, code: str, subject: str, now: datetime | None = None) -> bool:
    """Mark the operational alert ``code`` about ``subject`` resolved; False if none was active."""
    row = session.scalar(select(AlertRecord).where(AlertRecord.key == operational_key(code, subject)))
    if row is None or row.state == AlertState.RESOLVED.value:
        return False
    now = now or utcnow()
    row.state = AlertState.RESOLVED.value
    row.resolved_at = now
    row.updated_at = now
    log.info("alert.resolved", alert=row.id, code=code, subject=subject)
    return True


def acknowledge(session: Session, alert_id: int, by: str, now: datetime | None = None) -> AlertRecord | None:
    """Acknowledge an alert (idempotent: the first acknowledgement's time and author are kept)."""
    row = session.get(AlertRecord, alert_id)
    if row is None:
        return None
    if row.state == AlertState.OPEN.value:
        now = now or utcnow()
        row.state = AlertState.ACKNOWLEDGED.value
        row.acknowledged_at = now
        row.acknowledged_by = by[:64]
        row.updated_at = now
        log.info("alert.acknowledged", alert=row.id, code=row.code, by=by[:64])
    return row


def _upsert(
    session: Session,
    key: str,
    changes: Changes,
    routing: Routing,
    now: datetime,
    *,
    source: AlertSource,
    study_pk: int | None,
    patient_pk: int | None,
    code: str,
    severity: str,
    timepoint: int | None,
    subject: str | None,
    message: str,
    citation: str,
    result_version: int | None,
    exclude_sinks: frozenset[str] = frozenset(),
) -> AlertRecord:
    row = session.scalar(select(AlertRecord).where(AlertRecord.key == key))
    if row is None:
        row = AlertRecord(
            key=key,
            source=source.value,
            study_pk=study_pk,
            patient_pk=patient_pk,
            code=code,
            severity=severity,
            timepoint=timepoint,
            subject=subject,
            message=message,
            citation=citation,
            state=AlertState.OPEN.value,
            revision=1,
            result_version=result_version,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        changes.created.append(row.id)
        changes.deliveries += _enqueue(session, row, routing, now, exclude_sinks)
        _raised(row)
        return row
    escalated = SEVERITY_RANK[severity] < SEVERITY_RANK[row.severity]
    reopened = row.state == AlertState.RESOLVED.value
    row.severity = severity
    row.message = message
    row.citation = citation
    row.result_version = result_version if result_version is not None else row.result_version
    row.updated_at = now
    if escalated or reopened:
        row.revision += 1
        row.state = AlertState.OPEN.value
        row.acknowledged_at = None
        row.acknowledged_by = None
        row.resolved_at = None
        session.flush()
        changes.raised_again.append(row.id)
        changes.deliveries += _enqueue(session, row, routing, now, exclude_sinks)
        _raised(row)
    else:
        changes.updated.append(row.id)
    return row


def _raised(row: AlertRecord) -> None:
    ALERTS_RAISED.labels(code=row.code, severity=row.severity).inc()


def _enqueue(
    session: Session, row: AlertRecord, routing: Routing, now: datetime, exclude: frozenset[str]
) -> int:
    n = 0
    for sink, severities in sorted(routing.items()):
        if row.severity not in severities or sink in exclude:
            continue
        session.add(
            AlertDelivery(
                alert_pk=row.id,
                sink=sink,
                revision=row.revision,
                state=DeliveryState.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        n += 1
    session.flush()
    return n


# --------------------------------------------------------------------------------------------------------
# Queries (web service, metrics)


@dataclass(frozen=True)
class AlertFilter:
    severities: Sequence[str] = ()
    states: Sequence[str] = ()
    since: datetime | None = None
    until: datetime | None = None
    study_pk: int | None = None
    code: str | None = None
    limit: int = 200
    offset: int = 0


def list_alerts(session: Session, f: AlertFilter) -> list[AlertRecord]:
    """Alerts matching ``f``: most severe first, then newest."""
    q = select(AlertRecord)
    if f.severities:
        q = q.where(AlertRecord.severity.in_(list(f.severities)))
    if f.states:
        q = q.where(AlertRecord.state.in_(list(f.states)))
    if f.since is not None:
        q = q.where(AlertRecord.created_at >= f.since)
    if f.until is not None:
        q = q.where(AlertRecord.created_at < f.until)
    if f.study_pk is not None:
        q = q.where(AlertRecord.study_pk == f.study_pk)
    if f.code:
        q = q.where(AlertRecord.code == f.code)
    rank = case(SEVERITY_RANK, value=AlertRecord.severity, else_=99)
    order = (rank, AlertRecord.created_at.desc(), AlertRecord.id.desc())
    return list(session.scalars(q.order_by(*order).limit(f.limit).offset(f.offset)).all())


def counts_by_code(session: Session) -> list[tuple[str, str, str, int]]:
    """(code, severity, state, count) of every alert row."""
    rows = session.execute(
        select(AlertRecord.code, AlertRecord.severity, AlertRecord.state, func.count()).group_by(
            AlertRecord.code, AlertRecord.severity, AlertRecord.state
        )
    ).all()
    return [(c, s, st, int(n)) for c, s, st, n in rows]
