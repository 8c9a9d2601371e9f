"""Peer health: since when a DICOM peer has not answered, and the ``PACS_UNREACHABLE`` alert that follows.

Prior queries, retrievals and deliveries report each exchange with a peer here. A transient failure (no
association, timeout, abort: :class:`agent.peers.PeerUnreachable`) starts the outage clock, kept in the
``peer_health`` table so that a restart does not reset it; once the peer has been unreachable for
``alerts.pacs_unreachable_after_s`` the operational alert ``PACS_UNREACHABLE`` (subject ``peer:<name>``) is
raised in the alerts store, which sends it to the sinks. The first answer from the peer (any DICOM status: a
refusal is still an answer) stops the clock and resolves the alert.

Nothing here talks to the network; callers own the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.alerts.store import (
    PACS_UNREACHABLE,
    Routing,
    raise_operational,
    resolve_operational,
    routing_from_settings,
)
from agent.config import Settings
from agent.db.models import PeerHealth, utcnow
from agent.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class AlertPolicy:
    """Where operational alerts go (sink routing) and how long a peer may stay silent before one is raised."""

    routing: Routing = field(default_factory=dict)
    unreachable_after_s: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertPolicy:
        return cls(
            routing=routing_from_settings(settings.alerts.sinks),
            unreachable_after_s=settings.alerts.pacs_unreachable_after_s,
        )


def subject(peer: str) -> str:
    return f"peer:{peer}"


def _row(session: Session, peer: str, now: datetime) -> PeerHealth:
    row = session.get(PeerHealth, peer)
    if row is None:
        row = PeerHealth(name=peer, updated_at=now)
        session.add(row)
    return row


def peer_unreachable(
    session: Session, peer: str, error: str, policy: AlertPolicy, now: datetime | None = None
) -> bool:
    """Record a transient failure with ``peer``; raise ``PACS_UNREACHABLE`` once the outage is long enough.

    Returns whether the alert is (now) raised.
    """
    now = now or utcnow()
    row = _row(session, peer, now)
    if row.unreachable_since is None:
        row.unreachable_since = now
        log.warning("peer.unreachable", peer=peer, reason=error[:200])
    row.last_error = error[:500]
    row.updated_at = now
    silent_s = (now - row.unreachable_since).total_seconds()
    if silent_s < policy.unreachable_after_s:
        return False
    raise_operational(
        session,
        PACS_UNREACHABLE,
        f"DICOM peer {peer!r} has not answered for {silent_s:.0f} s "
        f"(since {row.unreachable_since.isoformat(timespec='seconds')}; last error: {error[:200]})",
        subject=subject(peer),
        routing=policy.routing,
        now=now,
    )
    return True


def peer_answered(session: Session, peer: str, now: datetime | None = None) -> bool:
    """Record that ``peer`` answered: the outage (if any) is over and its alert resolved.

    Returns whether an outage ended. Writes nothing while the peer was answering anyway.
    """
    row = session.get(PeerHealth, peer)
    if row is None or row.unreachable_since is None:
        return False
    now = now or utcnow()
    log.info(
        "peer.answering_again", peer=peer, silent_s=round((now - row.unreachable_since).total_seconds(), 1)
    )
    row.unreachable_since = None
    row.updated_at = now
    resolve_operational(session, PACS_UNREACHABLE, subject(peer), now)
    return True


def unreachable_peers(session: Session) -> set[str]:
    """Names of the peers in an outage (a cheap read that spares a write transaction when all is well)."""
    return set(
        session.scalars(select(PeerHealth.name).where(PeerHealth.unreachable_since.is_not(None))).all()
    )
