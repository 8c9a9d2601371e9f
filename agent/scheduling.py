"""The one APScheduler of the service: every periodic task of ``serve`` runs on it.

A periodic task is a function run every ``seconds`` on the scheduler's thread pool, never twice at once,
missed runs coalesced, first run at start. An exception is logged under the task's event name and the next
run tries again: a periodic task never stops the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from agent.log import get_logger

log = get_logger(__name__)


def new_scheduler() -> BackgroundScheduler:
    return BackgroundScheduler(timezone="UTC")


def guarded(func: Callable[[], object], failure_event: str) -> Callable[[], None]:
    """``func`` with its exceptions logged as ``failure_event`` instead of raised."""

    def run() -> None:
        try:
            func()
        except Exception as exc:  # the next run retries; the scheduler must keep running
            log.error(failure_event, error=type(exc).__name__, detail=str(exc)[:200])

    return run


def add_periodic(
    scheduler: BackgroundScheduler,
    func: Callable[[], object],
    seconds: float,
    job_id: str,
    failure_event: str,
    *,
    run_at_start: bool = True,
) -> None:
    scheduler.add_job(
        guarded(func, failure_event),
        "interval",
        seconds=seconds,
        id=job_id,
        max_instances=1,
        coalesce=True,
        **({"next_run_time": datetime.now(UTC)} if run_at_start else {}),
    )
