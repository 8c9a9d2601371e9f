"""The alert delivery loop: sends pending ``alert_deliveries`` rows to their sinks, never dropping one.

Each pass claims the due rows (pending, ``next_attempt_at`` reached, no live lease) under a lease on the
durable queue (``agent.queue``: any number of processes may deliver, each row by one of them), builds the
message from the database, calls the sink outside any transaction and records the outcome. A failure waits
``retry_initial_s * retry_factor**(attempts-1)`` (at most ``retry_max_s``) before the next attempt; a
delivery still failing ``give_up_after_s`` after it was queued is given up and raises the
``DELIVERY_GAVE_UP`` operational alert (routed to the other sinks). The same pass checks the spool's free
space and raises or clears ``DISK_LOW``.

A loop of its own beside the DICOM outbox (alert rows need no file and no association; this loop depends only
on ``agent.db``, the queue and the sinks), on the same queue mechanism and back-off rule.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import or_
from sqlalchemy.orm import Session, sessionmaker

from agent import queue as durable
from agent.alerts.models import AlertDelivery, AlertRecord, DeliveryState
from agent.alerts.results import CRITERION_LABELS, current_result
from agent.alerts.sinks import AlertMessage, CriterionResponse, DeliveryError, Sink
from agent.alerts.store import (
    DELIVERY_GAVE_UP,
    DISK_LOW,
    Routing,
    raise_operational,
    resolve_operational,
)
from agent.config import AlertSettings
from agent.db.models import Study, utcnow
from agent.log import get_logger
from agent.metrics import ALERT_DELIVERIES
from agent.queue import Lease, RetryPolicy
from agent.scheduling import add_periodic

log = get_logger(__name__)

# Seconds a claimed row stays leased; a crashed pass frees its rows after this.
LEASE_S = 120
BATCH = 50


@dataclass
class PassStats:
    delivered: int = 0
    failed: int = 0
    gave_up: int = 0


def retry_policy(settings: AlertSettings) -> RetryPolicy:
    return RetryPolicy(settings.retry_initial_s, settings.retry_factor, settings.retry_max_s)


def backoff_s(settings: AlertSettings, attempts: int) -> float:
    """Wait after the ``attempts``-th failed attempt (:func:`retry_policy`)."""
    return retry_policy(settings).delay(attempts)


def build_message(session: Session, delivery: AlertDelivery) -> AlertMessage:
    alert = session.get(AlertRecord, delivery.alert_pk)
    assert alert is not None
    study = session.get(Study, alert.study_pk) if alert.study_pk is not None else None
    responses: tuple[CriterionResponse, ...] = ()
    if study is not None:
        result = current_result(session, study.id)
        if result is not None:
            tp = alert.timepoint if alert.timepoint is not None else result.timepoint
            responses = tuple(
                CriterionResponse(key, CRITERION_LABELS.get(key, key), result.category(key, tp))
                for key in result.criteria()
            )
    patient = study.patient if study is not None else None
    return AlertMessage(
        delivery_id=delivery.id,
        alert_id=alert.id,
        revision=delivery.revision,
        code=alert.code,
        severity=alert.severity,
        state=alert.state,
        source=alert.source,
        message=alert.message,
        citation=alert.citation,
        timepoint=alert.timepoint,
        subject=alert.subject,
        created_at=alert.created_at,
        study_uid=study.study_uid if study is not None else None,
        accession_number=study.accession_number if study is not None else None,
        study_date=study.study_date if study is not None else None,
        patient_id=patient.patient_id if patient is not None else None,
        issuer=patient.issuer if patient is not None else None,
        patient_name=patient.name if patient is not None else None,
        responses=responses,
    )


class AlertDispatcher:
    """Delivers queued alerts to the configured sinks; ``run_once`` is one pass, ``start`` schedules it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        sinks: Mapping[str, Sink],
        settings: AlertSettings,
        routing: Routing,
        spool_root: Path | None = None,
    ) -> None:
        self.sessions = sessions
        self.sinks = dict(sinks)
        self.settings = settings
        self.routing = routing
        self.spool_root = spool_root

    def _claim(self, now: datetime) -> list[Lease]:
        with self.sessions.begin() as session:
            return durable.claim(
                session,
                AlertDelivery,
                where=[
                    AlertDelivery.state == DeliveryState.PENDING.value,
                    AlertDelivery.next_attempt_at <= now,
                    or_(AlertDelivery.lease_until.is_(None), AlertDelivery.lease_until < now),
                ],
                order_by=[AlertDelivery.next_attempt_at, AlertDelivery.id],
                lease_s=LEASE_S,
                queue="alerts",
                limit=BATCH,
                now=now,
            )

    def run_once(self, now: datetime | None = None) -> PassStats:
        """One pass: the disk check, then every due delivery."""
        now = now or utcnow()
        self.check_disk(now)
        stats = PassStats()
        for lease in self._claim(now):
            delivery_id = lease.id
            with self.sessions() as session:
                delivery = session.get(AlertDelivery, delivery_id)
                assert delivery is not None
                sink = self.sinks.get(delivery.sink)
                message = build_message(session, delivery)
            error: str | None
            if sink is None:
                error = "sink not configured"
            else:
                try:
                    sink.deliver(message)
                    error = None
                except DeliveryError as exc:
                    error = str(exc)
                except Exception as exc:  # a bug in a sink must not stop the loop
                    error = f"{type(exc).__name__}"
            self._record(lease, error, now, stats)
        return stats

    def _record(self, lease: Lease, error: str | None, now: datetime, stats: PassStats) -> None:
        with self.sessions.begin() as session:
            d = session.get(AlertDelivery, lease.id)
            assert d is not None
            if not durable.holds(session, AlertDelivery, lease):  # taken over after a stall: theirs now
                durable.record_outcome("alerts", "lost")
                return
            d.attempts += 1
            d.lease_until = None
            d.updated_at = now
            if error is None:
                d.state = DeliveryState.DELIVERED.value
                d.delivered_at = now
                d.last_error = None
                stats.delivered += 1
                durable.record_outcome("alerts", "done")
                ALERT_DELIVERIES.labels(sink=d.sink, outcome="delivered").inc()
                log.info("alert.delivered", delivery=d.id, alert=d.alert_pk, sink=d.sink, attempt=d.attempts)
                return
            d.last_error = error[:500]
            if (now - d.created_at).total_seconds() >= self.settings.give_up_after_s:
                d.state = DeliveryState.GAVE_UP.value
                stats.gave_up += 1
                durable.record_outcome("alerts", "failed")
                ALERT_DELIVERIES.labels(sink=d.sink, outcome="gave_up").inc()
                log.error(
                    "alert.delivery_gave_up", delivery=d.id, alert=d.alert_pk, sink=d.sink, error=error[:200]
                )
                raise_operational(
                    session,
                    DELIVERY_GAVE_UP,
                    f"Alert delivery to sink {d.sink!r} given up after {d.attempts} attempts: {error[:200]}",
                    subject=f"sink:{d.sink}",
                    routing=self.routing,
                    exclude_sinks=[d.sink],
                    now=now,
                )
                return
            d.next_attempt_at = retry_policy(self.settings).next_at(d.attempts, now)
            stats.failed += 1
            durable.record_outcome("alerts", "retry")
            ALERT_DELIVERIES.labels(sink=d.sink, outcome="failed").inc()
            log.warning(
                "alert.delivery_failed",
                delivery=d.id,
                alert=d.alert_pk,
                sink=d.sink,
                attempt=d.attempts,
                error=error[:200],
                retry_in_s=round((d.next_attempt_at - now).total_seconds(), 1),
            )

    def check_disk(self, now: datetime) -> None:
        if self.spool_root is None or self.settings.disk_low_mb <= 0:
            return
        try:
            free_mb = shutil.disk_usage(self.spool_root).free // (1024 * 1024)
        except OSError:
            return
        with self.sessions.begin() as session:
            if free_mb < self.settings.disk_low_mb:
                raise_operational(
                    session,
                    DISK_LOW,
                    f"Free space on the spool is {free_mb} MiB (alert below {self.settings.disk_low_mb} MiB)",
                    subject="spool",
                    routing=self.routing,
                    now=now,
                )
            else:
                resolve_operational(session, DISK_LOW, "spool", now)

    def schedule(self, scheduler: BackgroundScheduler) -> None:
        """Run a delivery pass every ``delivery_interval_s`` on the service's scheduler."""
        add_periodic(
            scheduler,
            self.run_once,
            self.settings.delivery_interval_s,
            "alert-delivery",
            "alert.delivery_pass_failed",
        )
