"""The delivery outbox: every object we send is a durable row until the destination has confirmed it.

* :func:`queue` adds one row per (destination, SOP Instance UID); queueing the same object again is a no-op,
  so a re-run never sends a second copy of what is already delivered or waiting.
* :func:`deliver_due` sends what is due, one association per destination. Success (and warning statuses)
  marks the row delivered. A transient failure (no association, timeout, abort, out of resources) schedules
  the next attempt with exponential back-off: ``backoff_initial_s`` doubling, capped at ``backoff_max_s``
  (dcm4chee's 30 s .. 10 min by default), or later when the peer asked for a longer wait (HTTP
  ``Retry-After``). A permanent failure status quarantines the row and raises the
  operational alert ``DELIVERY_REFUSED`` (subject ``outbox:<row id>``, resolved once the row is delivered);
  ``liver-agent outbox retry`` sends it again. Rows still pending ``give_up_after_s`` after they were queued
  raise ``DELIVERY_GAVE_UP`` (one alert per destination, subject ``dicom:<destination>``, resolved when they
  are delivered) and keep being retried: nothing is ever dropped.
* Operational alerts go through the alerts store (``agent.alerts.store``), so the sinks and the HTTP API see
  them. Each round also reports whether the destination answered to ``agent.pipeline.health`` (the
  ``PACS_UNREACHABLE`` clock).
* State lives in the database only, so a restart resumes where the last run stopped. A crash between the
  peer's success and our commit re-sends the same SOP Instance UID, which a PACS stores as the same object.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from agent import queue as durable
from agent.alerts.store import DELIVERY_GAVE_UP, DELIVERY_REFUSED, raise_operational, resolve_operational
from agent.config import OutboxSettings, PeerCommon
from agent.db.models import OutboxItem, OutboxState, utcnow
from agent.log import get_logger, uid_hash
from agent.peers import Outcome, Peer, PeerConfigError, PeerError, StoreItem, build_peer
from agent.pipeline.health import AlertPolicy, peer_answered, peer_unreachable
from agent.queue import Lease, RetryPolicy

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutboundObject:
    path: Path
    sop_class_uid: str
    sop_uid: str


def retry_policy(settings: OutboxSettings) -> RetryPolicy:
    """``backoff_initial_s``, doubling, capped at ``backoff_max_s``."""
    return RetryPolicy(settings.backoff_initial_s, 2.0, settings.backoff_max_s)


def backoff_s(attempts: int, settings: OutboxSettings) -> float:
    """Wait after the ``attempts``-th failed attempt (1-based): :func:`retry_policy`."""
    return retry_policy(settings).delay(attempts)


def _due(now: datetime) -> list[ColumnElement[bool]]:
    return [
        OutboxItem.state == OutboxState.PENDING.value,
        OutboxItem.next_attempt_at <= now,
        or_(OutboxItem.lease_until.is_(None), OutboxItem.lease_until < now),
    ]


def _lease_s(settings: OutboxSettings) -> float:
    """How long a delivering process holds its batch: every peer timeout for each object, at least 5 min."""
    return max(300.0, settings.batch * 60.0)


def store_destinations(peers: Mapping[str, PeerCommon]) -> list[str]:
    return [name for name, peer in peers.items() if peer.store]


def queue(
    session: Session,
    destinations: Sequence[str],
    objects: Sequence[OutboundObject],
    study_pk: int | None,
    output_pk: int | None,
    now: datetime | None = None,
) -> int:
    """Add a pending row per destination and object unless one exists; returns the rows added."""
    now = now or utcnow()
    added = 0
    for dest in destinations:
        for obj in objects:
            exists = session.execute(
                select(OutboxItem.id).where(OutboxItem.destination == dest, OutboxItem.sop_uid == obj.sop_uid)
            ).scalar()
            if exists is not None:
                continue
            session.add(
                OutboxItem(
                    data=obj.path.read_bytes() if obj.path.is_file() else None,
                    destination=dest,
                    study_pk=study_pk,
                    output_pk=output_pk,
                    sop_uid=obj.sop_uid,
                    sop_class_uid=obj.sop_class_uid,
                    path=str(obj.path),
                    state=OutboxState.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
            added += 1
    session.flush()
    return added


def refused_subject(item_id: int) -> str:
    return f"outbox:{item_id}"


def overdue_subject(destination: str) -> str:
    return f"dicom:{destination}"


@dataclass
class DeliveryRound:
    delivered: int = 0
    retried: int = 0
    quarantined: int = 0


def deliver_due(
    sessions: sessionmaker[Session],
    peers: Mapping[str, PeerCommon],
    calling_aet: str,
    settings: OutboxSettings,
    now: datetime | None = None,
    policy: AlertPolicy | None = None,
) -> DeliveryRound:
    """One delivery round over every destination with due rows."""
    now = now or utcnow()
    policy = policy or AlertPolicy()
    summary = DeliveryRound()
    _raise_give_up_alerts(sessions, settings, policy, now)
    with sessions() as session:
        destinations = list(
            session.execute(select(OutboxItem.destination).where(*_due(now)).distinct()).scalars()
        )
    for dest in destinations:
        peer_settings = peers.get(dest)
        if peer_settings is None:
            log.warning("outbox.unknown_destination", destination=dest)
            continue
        try:
            peer = build_peer(dest, peer_settings, calling_aet)
        except PeerConfigError as exc:
            log.warning("outbox.bad_destination", destination=dest, reason=str(exc))
            continue
        # Claimed under a lease: another process delivering the same destination takes other rows.
        with sessions.begin() as session:
            leases = durable.claim(
                session,
                OutboxItem,
                where=[OutboxItem.destination == dest, *_due(now)],
                order_by=[OutboxItem.id],
                lease_s=_lease_s(settings),
                queue="outbox",
                limit=settings.batch,
                now=now,
            )
            rows = {
                r.id: r
                for r in session.execute(
                    select(OutboxItem).where(OutboxItem.id.in_([lease.id for lease in leases]))
                ).scalars()
            }
            snapshot = [
                (
                    lease,
                    StoreItem(
                        Path(rows[lease.id].path), rows[lease.id].sop_class_uid, rows[lease.id].sop_uid
                    ),
                )
                for lease in leases
            ]
        if snapshot:
            _deliver_batch(sessions, peer, snapshot, settings, policy, summary)
    return summary


def _deliver_batch(
    sessions: sessionmaker[Session],
    client: Peer,
    batch: list[tuple[Lease, StoreItem]],
    settings: OutboxSettings,
    policy: AlertPolicy,
    summary: DeliveryRound,
) -> None:
    leases = {lease.id: lease for lease, _ in batch}
    with contextlib.ExitStack() as stack:
        batch = [(lease, _materialised(sessions, lease.id, it, stack)) for lease, it in batch]
        _deliver_present(sessions, client, batch, leases, settings, policy, summary)


def _materialised(
    sessions: sessionmaker[Session], pk: int, item: StoreItem, stack: contextlib.ExitStack
) -> StoreItem:
    """``item``, or when its file is not on this node's disk (another node wrote it), a temporary copy of
    the bytes kept in the row, removed after the round."""
    if item.path.is_file():
        return item
    with sessions() as session:
        data = session.execute(select(OutboxItem.data).where(OutboxItem.id == pk)).scalar()
    if data is None:
        return item
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="liver-agent-outbox-"))
    path = Path(tmp) / item.path.name
    path.write_bytes(data)
    return StoreItem(path, item.sop_class_uid, item.sop_uid)


def _deliver_present(
    sessions: sessionmaker[Session],
    client: Peer,
    batch: list[tuple[Lease, StoreItem]],
    leases: dict[int, Lease],
    settings: OutboxSettings,
    policy: AlertPolicy,
    summary: DeliveryRound,
) -> None:
    missing = [(lease.id, it) for lease, it in batch if not it.path.is_file()]
    present = [(lease.id, it) for lease, it in batch if it.path.is_file()]
    # row id -> (outcome, peer status, detail, wait the peer asked for)
    outcomes: dict[int, tuple[Outcome, int | None, str, float | None]] = {
        pk: (Outcome.PERMANENT, None, "file missing from the results directory", None) for pk, _ in missing
    }
    started = utcnow()
    # Did the peer answer? Any DICOM status (even a refusal) says yes; no association or only lost ones, no.
    answered: bool | None = None
    unreachable_reason = ""
    if present:
        try:
            results = client.store([it for _, it in present])
            for (pk, _), res in zip(present, results, strict=True):
                outcomes[pk] = (res.outcome, res.status, res.detail, res.retry_after_s)
            answered = any(res.status is not None for res in results) or not all(
                res.outcome is Outcome.TRANSIENT for res in results
            )
            unreachable_reason = "" if answered else results[0].detail
        except PeerError as exc:
            outcome = client.classify_failure(exc)
            for pk, _ in present:
                outcomes[pk] = (outcome, exc.status, str(exc), exc.retry_after_s)
            answered, unreachable_reason = exc.status is not None, str(exc)
    end = utcnow()
    gave_up_cleared = False
    with sessions.begin() as session:
        if answered is True:
            peer_answered(session, client.name, end)
        elif answered is False:
            peer_unreachable(session, client.name, unreachable_reason, policy, end)
        for pk, (outcome, status, detail, retry_after) in outcomes.items():
            item = session.get(OutboxItem, pk)
            if item is None or item.state != OutboxState.PENDING.value:
                continue
            if not durable.holds(session, OutboxItem, leases[pk]):  # taken over after a stall: theirs now
                durable.record_outcome("outbox", "lost")
                continue
            item.lease_until = None
            item.attempts += 1
            item.last_attempt_at = end
            item.last_status = status
            if outcome is Outcome.OK:
                if item.last_error is not None:  # refused before and retried by an operator: resolved
                    resolve_operational(session, DELIVERY_REFUSED, refused_subject(item.id), end)
                gave_up_cleared |= item.alerted_at is not None
                item.state = OutboxState.DELIVERED.value
                item.delivered_at = end
                item.last_error = None
                summary.delivered += 1
                durable.record_outcome("outbox", "done")
                log.info(
                    "outbox.delivered",
                    item=item.id,
                    destination=item.destination,
                    sop=uid_hash(item.sop_uid),
                    attempts=item.attempts,
                    ms=round((end - started).total_seconds() * 1000, 1),
                )
            elif outcome is Outcome.TRANSIENT:
                wait = backoff_s(item.attempts, settings)
                if retry_after is not None:  # the peer said when to come back (HTTP Retry-After)
                    wait = max(wait, min(retry_after, settings.give_up_after_s))
                item.next_attempt_at = end + timedelta(seconds=wait)
                item.last_error = detail[:500]
                summary.retried += 1
                durable.record_outcome("outbox", "retry")
                log.warning(
                    "outbox.retry_later",
                    item=item.id,
                    destination=item.destination,
                    attempts=item.attempts,
                    wait_s=wait,
                    reason=detail[:200],
                )
            else:
                item.state = OutboxState.QUARANTINED.value
                item.last_error = detail[:500]
                summary.quarantined += 1
                durable.record_outcome("outbox", "failed")
                log.warning(
                    "outbox.quarantined",
                    item=item.id,
                    destination=item.destination,
                    status=status,
                    reason=detail[:200],
                )
                raise_operational(
                    session,
                    DELIVERY_REFUSED,
                    f"{item.destination} refused object {item.id} ({detail}); it is kept in quarantine, "
                    f"'liver-agent outbox retry {item.id}' sends it again",
                    subject=refused_subject(item.id),
                    routing=policy.routing,
                    study_pk=item.study_pk,
                    now=end,
                )
        if gave_up_cleared:
            still = session.execute(
                select(func.count())
                .select_from(OutboxItem)
                .where(
                    OutboxItem.destination == client.name,
                    OutboxItem.state == OutboxState.PENDING.value,
                    OutboxItem.alerted_at.is_not(None),
                )
            ).scalar()
            if not still:
                resolve_operational(session, DELIVERY_GAVE_UP, overdue_subject(client.name), end)


def _raise_give_up_alerts(
    sessions: sessionmaker[Session], settings: OutboxSettings, policy: AlertPolicy, now: datetime
) -> None:
    """One ``DELIVERY_GAVE_UP`` alert per destination with rows pending longer than ``give_up_after_s``."""
    cutoff = now - timedelta(seconds=settings.give_up_after_s)
    with sessions() as session:
        newly = session.execute(
            select(OutboxItem.id).where(
                OutboxItem.state == OutboxState.PENDING.value,
                OutboxItem.created_at <= cutoff,
                OutboxItem.alerted_at.is_(None),
            )
        ).first()
    if newly is None:  # the usual case: a read, no write transaction
        return
    with sessions.begin() as session:
        overdue = (
            session.execute(
                select(OutboxItem).where(
                    OutboxItem.state == OutboxState.PENDING.value,
                    OutboxItem.created_at <= cutoff,
                    OutboxItem.alerted_at.is_(None),
                )
            )
            .scalars()
            .all()
        )
        by_dest: dict[str, list[OutboxItem]] = {}
        for item in overdue:
            item.alerted_at = now
            by_dest.setdefault(item.destination, []).append(item)
        for dest, items in sorted(by_dest.items()):
            total = session.execute(
                select(func.count(), func.min(OutboxItem.created_at)).where(
                    OutboxItem.destination == dest,
                    OutboxItem.state == OutboxState.PENDING.value,
                    OutboxItem.alerted_at.is_not(None),
                )
            ).one()
            last = max(items, key=lambda i: i.last_attempt_at or i.created_at)
            log.warning("outbox.overdue", destination=dest, items=int(total[0]), newly=len(items))
            raise_operational(
                session,
                DELIVERY_GAVE_UP,
                f"{int(total[0])} object(s) for {dest} still undelivered after "
                f"{settings.give_up_after_s:.0f} s (oldest queued {total[1].isoformat(timespec='seconds')}; "
                f"last error: {last.last_error or '-'}); kept and still retrying",
                subject=overdue_subject(dest),
                routing=policy.routing,
                now=now,
            )


def retry(session: Session, ids: Sequence[int] | None = None, now: datetime | None = None) -> int:
    """Make quarantined (and waiting) rows due now: all of them, or those in ``ids``. Returns the count."""
    now = now or utcnow()
    query = select(OutboxItem).where(
        OutboxItem.state.in_((OutboxState.PENDING.value, OutboxState.QUARANTINED.value))
    )
    if ids:
        query = query.where(OutboxItem.id.in_(list(ids)))
    n = 0
    for item in session.execute(query).scalars():
        item.state = OutboxState.PENDING.value
        item.next_attempt_at = now
        n += 1
    return n


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    pending: int
    quarantined: int
    delivered: int
    oldest_pending: datetime | None


def depth(session: Session) -> OutboxDepth:
    counts = dict(session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state)).all())
    oldest = session.execute(
        select(func.min(OutboxItem.created_at)).where(OutboxItem.state == OutboxState.PENDING.value)
    ).scalar()
    return OutboxDepth(
        pending=counts.get(OutboxState.PENDING.value, 0),
        quarantined=counts.get(OutboxState.QUARANTINED.value, 0),
        delivered=counts.get(OutboxState.DELIVERED.value, 0),
        oldest_pending=oldest,
    )


class OutboxRunner:
    """The scheduler's delivery tick."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        peers: Mapping[str, PeerCommon],
        calling_aet: str,
        settings: OutboxSettings,
        policy: AlertPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.peers = peers
        self.calling_aet = calling_aet
        self.settings = settings
        self.policy = policy or AlertPolicy()

    def tick(self) -> None:
        try:
            deliver_due(self.sessions, self.peers, self.calling_aet, self.settings, policy=self.policy)
        except Exception as exc:  # the next tick retries; the scheduler must keep running
            log.error("outbox.round_failed", error=type(exc).__name__, detail=str(exc)[:200])
