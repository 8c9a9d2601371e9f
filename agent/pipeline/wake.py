"""Scheduler ticks that other threads can wake: work handed on at once instead of at the next poll.

The stability monitor wakes the study worker when it enqueues a job, and the worker wakes the delivery
outbox when it has queued results; the polling intervals stay as the safety net (after a restart, or when a
wake-up is lost). A tick never runs twice at the same time: waking a running tick makes it run once more
when it finishes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from agent.db.models import utcnow


class WakeableTick:
    """Wraps a tick body for an APScheduler job; :meth:`wake` makes it run now (or once more)."""

    def __init__(self, body: Callable[[], None]) -> None:
        self.body = body
        self._lock = threading.Lock()
        self._running = False
        self._again = False
        self._scheduler: Any = None
        self._job_id: str | None = None

    def attach(self, scheduler: Any, job_id: str) -> None:
        """The scheduler and job id whose next run :meth:`wake` moves to now."""
        self._scheduler, self._job_id = scheduler, job_id

    def __call__(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
            self._running = True
        try:
            while True:
                self.body()
                with self._lock:
                    if not self._again:
                        self._running = False
                        return
                    self._again = False
        except BaseException:
            with self._lock:
                self._running = False
            raise

    def wake(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
        if self._scheduler is None or self._job_id is None:
            return
        try:
            self._scheduler.modify_job(self._job_id, next_run_time=utcnow())
        except Exception:  # scheduler stopped or job gone: the interval trigger (or nobody) runs it
            return
