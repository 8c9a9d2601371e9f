"""``liver-agent serve``: run the DICOM listener and the stability monitor until SIGTERM or SIGINT.

Start-up: logging, database migrations, spool directory, then the SCP and the scheduler. On a signal the
listener stops accepting, in-flight associations get ``dicom.shutdown_grace_s`` to finish, and the command
exits 0. Runs with no configuration at all (SQLite and spool under ./var, 127.0.0.1:11112, LIVERAGENT).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

import pydicom.config

from agent.commands import settings_or_exit
from agent.db import make_engine, session_factory, upgrade
from agent.dicom.reconcile import reconcile
from agent.dicom.scp import StoreSCP
from agent.dicom.spool import Spool
from agent.log import configure_logging, get_logger
from agent.pipeline.stability import StabilityMonitor

log = get_logger(__name__)


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("serve", parents=parents, help="run the agent (DICOM listener and pipeline)")
    p.set_defaults(func=run)


def quiet_libraries(level: str) -> None:
    """Keep raw UIDs out of the log: pydicom and pynetdicom warn about a non-conformant UID with its value.

    The SCP refuses such instances itself and logs the refusal with hashed UIDs; above DEBUG the library
    warnings are dropped (pydicom does not validate values while decoding command sets).
    """
    if level == "DEBUG":
        return
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def add_pipeline(monitor: StabilityMonitor, settings: Any, sessions: Any, scp: StoreSCP) -> None:
    """The study worker and the delivery outbox run on the stability monitor's scheduler.

    Work is handed on at once: a study turning stable wakes the worker, results queued wake the outbox; the
    intervals remain the safety net (``agent.pipeline.wake``).
    """
    from agent.pipeline.health import AlertPolicy
    from agent.pipeline.outbox import OutboxRunner
    from agent.pipeline.wake import WakeableTick

    policy = AlertPolicy.from_settings(settings)
    runner = OutboxRunner(sessions, settings.peers, settings.dicom.ae_title, settings.outbox, policy)
    deliver = WakeableTick(runner.tick)
    interval = settings.outbox.interval_s
    monitor.scheduler.add_job(
        deliver, "interval", seconds=interval, id="outbox", max_instances=1, coalesce=True
    )
    deliver.attach(monitor.scheduler, "outbox")
    if settings.pipeline.enabled:
        # Imported only when enabled: the worker's libraries (highdicom) weigh ~23 MB of resident memory.
        from agent.pipeline.process import Deps, Worker

        worker = Worker(Deps(settings, sessions, store_handler=scp._on_store), on_output=deliver.wake)
        work = WakeableTick(worker.tick)
        monitor.scheduler.add_job(
            work,
            "interval",
            seconds=settings.pipeline.poll_interval_s,
            id="worker",
            max_instances=1,
            coalesce=True,
        )
        work.attach(monitor.scheduler, "worker")
        monitor.on_stable = work.wake


def start_alerts_and_web(
    settings: Any, sessions: Any, scp: StoreSCP, monitor: StabilityMonitor, spool_root: Any
) -> tuple[Any, Any]:
    """The alert delivery loop, and the HTTP service unless ``web.enabled`` is false."""
    from agent.alerts.delivery import AlertDispatcher
    from agent.alerts.sinks import build_sinks
    from agent.alerts.store import routing_from_settings

    routing = routing_from_settings(settings.alerts.sinks)
    dispatcher = AlertDispatcher(
        sessions, build_sinks(settings.alerts.sinks), settings.alerts, routing, spool_root
    )
    dispatcher.start()
    if not settings.web.enabled:
        return dispatcher, None
    from agent.web.app import Readiness, create_app  # only when enabled (~10 MB resident)
    from agent.web.server import WebServer

    checks = {
        "scheduler": lambda: bool(monitor.scheduler.running) and dispatcher.running,
        "dicom": lambda: scp.server is not None and scp._thread is not None and scp._thread.is_alive(),
    }
    web = WebServer(
        create_app(settings.web, sessions, Readiness(checks)), settings.web.host, settings.web.port
    )
    try:
        web.start()
    except OSError:
        dispatcher.stop()
        raise
    return dispatcher, web


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit(args.config)
    configure_logging(settings.log.level, settings.log.format)
    quiet_libraries(settings.log.level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("agent.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    engine = make_engine(settings.database.url.get_secret_value(), settings.database.echo)
    try:
        upgrade(engine)
    except Exception as exc:
        log.error("db.upgrade_failed", error=type(exc).__name__, detail=str(exc)[:300])
        return 1
    spool = Spool(settings.storage.spool_dir, settings.storage.min_free_mb)
    try:
        clean = spool.prepare()
        if not clean:
            # The last stop was not clean: index every spooled instance whose commit may have been lost.
            reconcile(spool, engine)
    except OSError as exc:
        log.error("spool.unusable", path=str(spool.root), error=exc.strerror)
        return 1
    sessions = session_factory(engine)
    scp = StoreSCP(settings.dicom, spool, sessions)
    monitor = StabilityMonitor(sessions, settings.stability)
    try:
        scp.start()
    except (OSError, ValueError) as exc:
        log.error("scp.start_failed", error=type(exc).__name__, detail=str(exc)[:300])
        return 1
    add_pipeline(monitor, settings, sessions, scp)
    try:
        dispatcher, web = start_alerts_and_web(settings, sessions, scp, monitor, spool.root)
    except (OSError, ValueError) as exc:
        log.error("web.start_failed", error=type(exc).__name__, detail=str(exc)[:300])
        scp.stop(0)
        return 1
    monitor.start()
    log.info("agent.started", spool=str(spool.root), database=engine.dialect.name)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        if web is not None:
            web.stop()
        scp.stop(settings.dicom.shutdown_grace_s)
        monitor.stop()
        dispatcher.stop()
        scp.index.close()
        spool.mark_clean()
        engine.dispose()
    log.info("agent.stopped")
    return 0
