"""Claim rows under a lease, renew the lease while the work runs, check and release it.

A lease is the row's ``lease_until`` value: whoever set that exact value holds the row. Renewing and
releasing are compare-and-set updates on it, so a holder whose lease ran out (and whose row another holder
claimed) learns it from a zero row count instead of overwriting the other's work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Select, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from agent.db.models import utcnow
from agent.log import get_logger, stack_frames
from agent.queue.stats import record_claimed

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Lease:
    """Row ``id`` of a queue table is held until ``until``."""

    id: int
    until: datetime


def _lease_matches(model: Any, until: datetime | None) -> ColumnElement[bool]:
    column = model.lease_until
    return cast(ColumnElement[bool], column.is_(None) if until is None else column == until)


def claim(
    session: Session,
    model: Any,
    *,
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    lease_s: float,
    queue: str,
    limit: int = 1,
    values: dict[str, Any] | None = None,
    refine: Callable[[Select[Any]], Select[Any]] | None = None,
    now: datetime | None = None,
) -> list[Lease]:
    """Claim up to ``limit`` rows of ``model`` that satisfy ``where`` (conditions on its own columns, which
    must include "no live lease"), oldest first by ``order_by``; set their lease (and ``values``).

    ``refine`` may join other tables to narrow the candidates. On PostgreSQL the candidates are locked with
    ``FOR UPDATE SKIP LOCKED`` (rows another claimer is looking at are skipped, not waited for); on every
    engine each row is then taken with a compare-and-set on its lease and ``where``, so a row is held by one
    claimer only. The caller commits.
    """
    now = now or utcnow()
    candidates = select(model.id, model.lease_until).where(*where)
    if refine is not None:
        candidates = refine(candidates)
    candidates = candidates.order_by(*order_by)
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        candidates = candidates.with_for_update(skip_locked=True, of=model).limit(limit)
    else:
        candidates = candidates.limit(max(limit * 4, 8))
    until = now + timedelta(seconds=lease_s)
    taken: list[Lease] = []
    for row_id, seen in session.execute(candidates).all():
        result = session.execute(
            update(model)
            .where(model.id == row_id, _lease_matches(model, seen), *where)
            .values(lease_until=until, **(values or {}))
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], result).rowcount == 1:
            taken.append(Lease(row_id, until))
            if len(taken) >= limit:
                break
    record_claimed(queue, len(taken))
    return taken


def renew(
    session: Session, model: Any, lease: Lease, lease_s: float, now: datetime | None = None
) -> Lease | None:
    """Extend a held lease; None when it is no longer ours (it ran out and the row was claimed again, or
    the row was finished). The caller commits."""
    until = (now or utcnow()) + timedelta(seconds=lease_s)
    if until <= lease.until:
        until = lease.until + timedelta(microseconds=1)
    result = session.execute(
        update(model)
        .where(model.id == lease.id, model.lease_until == lease.until)
        .values(lease_until=until)
        .execution_options(synchronize_session=False)
    )
    return Lease(lease.id, until) if cast(CursorResult[Any], result).rowcount == 1 else None


def holds(session: Session, model: Any, lease: Lease) -> bool:
    """Whether ``lease`` still holds its row (read inside the transaction that records the outcome)."""
    current = session.execute(select(model.lease_until).where(model.id == lease.id)).scalar()
    return current is not None and current == lease.until


def release(session: Session, model: Any, lease: Lease, values: dict[str, Any] | None = None) -> bool:
    """Clear a held lease (and set ``values``); False when it was not ours any more. The caller commits."""
    result = session.execute(
        update(model)
        .where(model.id == lease.id, model.lease_until == lease.until)
        .values(lease_until=None, **(values or {}))
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


class LeaseKeeper:
    """Renews a lease every third of ``lease_s`` on a thread of its own while the block runs.

    ``lease`` is the current lease (its ``until`` moves on); ``lost`` is set when a renewal found the row
    taken by someone else. Use as a context manager around the work.
    """

    def __init__(self, sessions: sessionmaker[Session], model: Any, lease: Lease, lease_s: float) -> None:
        self.sessions = sessions
        self.model = model
        self.lease = lease
        self.lease_s = lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def current(self) -> Lease:
        with self._lock:
            return self.lease

    def renew_now(self) -> bool:
        """One renewal; False (and ``lost`` set) when the lease is gone."""
        with self._lock:
            try:
                with self.sessions.begin() as session:
                    renewed = renew(session, self.model, self.lease, self.lease_s)
            except Exception as exc:  # the database is away: keep the old lease, try again next time
                log.warning("queue.renew_failed", table=self.model.__tablename__, error=type(exc).__name__,
                            frames=stack_frames(exc))  # fmt: skip
                return not self.lost.is_set()
            if renewed is None:
                self.lost.set()
                log.warning("queue.lease_lost", table=self.model.__tablename__, row=self.lease.id)
                return False
            self.lease = renewed
            return True

    def _run(self) -> None:
        interval = max(self.lease_s / 3.0, 0.05)
        while not self._stop.wait(interval):
            if not self.renew_now():
                return

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.lease.id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
