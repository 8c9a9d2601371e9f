"""Wakeable scheduler ticks: work handed on at once rather than at the next poll, never run twice at once."""

from __future__ import annotations

import threading
import time

from apscheduler.schedulers.background import BackgroundScheduler

from agent.pipeline.wake import WakeableTick


def test_wake_runs_the_tick_now_instead_of_at_the_next_interval() -> None:
    ran = threading.Event()
    tick = WakeableTick(ran.set)
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(tick, "interval", seconds=3600, id="work", max_instances=1, coalesce=True)
    tick.attach(scheduler, "work")
    scheduler.start()
    try:
        assert not ran.wait(0.3)  # the interval alone would wait an hour
        t0 = time.monotonic()
        tick.wake()
        assert ran.wait(5)
        assert time.monotonic() - t0 < 2
    finally:
        scheduler.shutdown(wait=True)


def test_a_wake_during_a_run_makes_it_run_once_more_and_never_concurrently() -> None:
    started, release = threading.Event(), threading.Event()
    calls, active, overlap = [], [], []

    def body() -> None:
        active.append(1)
        overlap.append(len(active) > 1)
        calls.append(1)
        started.set()
        if len(calls) == 1:
            release.wait(5)
        active.pop()

    tick = WakeableTick(body)
    runner = threading.Thread(target=tick)
    runner.start()
    assert started.wait(5)
    tick.wake()  # while running: remembered
    tick()  # a second caller while running returns at once (remembered too)
    release.set()
    runner.join(5)
    assert len(calls) == 2 and not any(overlap)
    tick.wake()  # not running and no scheduler attached: nothing happens
    assert len(calls) == 2
