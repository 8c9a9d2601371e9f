"""``liver-agent serve``: run the DICOM listener and the stability monitor until SIGTERM or SIGINT.

Start-up: logging, database migrations, spool directory, then the SCP and the scheduler. On a signal the
listener stops accepting, in-flight associations get ``dicom.shutdown_grace_s`` to finish, and the command
exits 0. Runs with no configuration at all (SQLite and spool under ./var, 127.0.0.1:11112, LIVERAGENT).

With ``dicom.receiver_processes`` above 1, the process forks that many minus one receiver processes after
the migrations and the spool reconciliation, before any thread starts. Each runs its own listener on the same
port (one listening socket made before the fork: the first idle process accepts each new association) and
its own index writer; they take
turns on the SQLite write lock through a ``flock``. Everything else (stability, pipeline, outbox, alerts,
HTTP) runs in the first process only. A signal to the first process stops the receivers as it stops its own
listener; the clean-stop marker is written only when every receiver exited cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pydicom.config
from apscheduler.schedulers.background import BackgroundScheduler

from agent.commands import settings_or_exit
from agent.db import make_engine, session_factory, upgrade
from agent.dicom.counters import ReceiveCounters, SharedCounters
from agent.dicom.reconcile import reconcile
from agent.dicom.scp import StoreSCP, accepted_storage_classes, shared_listener
from agent.dicom.spool import Spool
from agent.log import configure_logging, get_logger
from agent.pipeline.stability import StabilityMonitor
from agent.scheduling import add_periodic, new_scheduler

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


def add_pipeline(
    scheduler: BackgroundScheduler, monitor: StabilityMonitor, settings: Any, sessions: Any, scp: StoreSCP
) -> None:
    """The study worker and the delivery outbox, on the service's scheduler.

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
    scheduler.add_job(deliver, "interval", seconds=interval, id="outbox", max_instances=1, coalesce=True)
    deliver.attach(scheduler, "outbox")
    if settings.pipeline.enabled:
        # Imported only when enabled: the worker's libraries (highdicom) weigh ~23 MB of resident memory.
        from agent.pipeline.worker import Deps, Worker

        deps = Deps(settings, sessions, store_handler=scp.handle_store, store_file=scp.store_retrieved)
        worker = Worker(deps, on_output=deliver.wake)
        work = WakeableTick(worker.tick)
        scheduler.add_job(
            work,
            "interval",
            seconds=settings.pipeline.poll_interval_s,
            id="worker",
            max_instances=1,
            coalesce=True,
        )
        work.attach(scheduler, "worker")
        monitor.on_stable = work.wake


def start_alerts_and_web(
    settings: Any, sessions: Any, scp: StoreSCP, scheduler: BackgroundScheduler, spool_root: Any
) -> Any:
    """The alert delivery loop, and the HTTP service unless ``web.enabled`` is false (returned, or None)."""
    from agent.alerts.delivery import AlertDispatcher
    from agent.alerts.sinks import build_sinks
    from agent.alerts.store import routing_from_settings

    routing = routing_from_settings(settings.alerts.sinks)
    dispatcher = AlertDispatcher(
        sessions, build_sinks(settings.alerts.sinks), settings.alerts, routing, spool_root
    )
    dispatcher.schedule(scheduler)
    if not settings.web.enabled:
        return None
    from agent.web.app import Readiness, create_app  # only when enabled (~10 MB resident)
    from agent.web.server import WebServer

    checks = {
        "scheduler": lambda: bool(scheduler.running),
        "dicom": lambda: scp.listening,
    }
    from agent.web.stow import StowService

    stow = StowService(scp.spool, scp.store_file, settings.web.stow_max_request_mb * 1024 * 1024)
    web = WebServer(
        create_app(settings.web, sessions, Readiness(checks), stow), settings.web.host, settings.web.port
    )
    web.start()
    return web


def start_marker_listener(settings: Any, sessions: Any) -> Any:
    """The HL7 MLLP listener for tumour marker results when ``markers.hl7.enabled`` (returned, or None)."""
    cfg = settings.markers.hl7
    if not cfg.enabled:
        return None
    from agent.markers.hl7in import MarkerReceiver, MLLPListener
    from agent.response.parse import marker_from_name

    codes = {code: marker_from_name(name) for code, name in cfg.local_codes.items()}
    listener = MLLPListener(
        MarkerReceiver(sessions, cfg.allowed_applications, codes),
        cfg.host,
        cfg.port,
        max_message_bytes=cfg.max_message_bytes,
        read_timeout_s=cfg.read_timeout_s,
        idle_timeout_s=cfg.idle_timeout_s,
        max_connections=cfg.max_connections,
    )
    listener.start()
    return listener


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
        log.info("spool.durability", directory_fsync=spool.sync_new_entries, filesystem=spool.durability)
        if not clean:
            # The last stop was not clean: index every spooled instance whose commit may have been lost.
            reconcile(spool, engine)
    except OSError as exc:
        log.error("spool.unusable", path=str(spool.root), error=exc.strerror)
        return 1
    receivers = settings.dicom.receiver_processes or min(os.cpu_count() or 1, AUTO_RECEIVERS_MAX)
    shared = receivers > 1
    writer_lock = writer_lock_path(engine) if shared else None
    children: list[int] = []
    counters: SharedCounters | None = None
    listener = None
    if shared:
        try:
            listener = shared_listener(settings.dicom.host, settings.dicom.port)
        except OSError as exc:
            log.error("scp.start_failed", error=type(exc).__name__, detail=str(exc)[:300])
            return 1
        counters = SharedCounters(receivers, accepted_storage_classes().values())
        engine.dispose()  # no database connection crosses the fork
        gc.freeze()  # objects from before the fork stay out of collections: their pages stay shared
        for index in range(1, receivers):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which leaves through os._exit
                code = 1
                try:
                    code = run_receiver(
                        settings, spool, engine, listener, writer_lock, counters.writer(index), stop
                    )
                finally:
                    os._exit(code)
            children.append(pid)
    sessions = session_factory(engine)
    scp = StoreSCP(settings.dicom, spool, sessions, listener=listener, writer_lock=writer_lock)
    # One scheduler for every periodic task, created after the receivers are forked (threads do not fork).
    scheduler = new_scheduler()
    monitor = StabilityMonitor(sessions, settings.stability)
    monitor.schedule(scheduler)
    # This node's heartbeat: while it beats, its studies run here (agent.pipeline.nodes).
    from agent.pipeline.nodes import heartbeat

    node_name = settings.node.resolved_name()
    add_periodic(
        scheduler,
        lambda: heartbeat(sessions, node_name),
        settings.node.heartbeat_s,
        "node",
        "node.heartbeat_failed",
    )
    log.info("node.started", node=node_name)
    try:
        scp.start()
    except (OSError, ValueError) as exc:
        log.error("scp.start_failed", error=type(exc).__name__, detail=str(exc)[:300])
        stop_receivers(children, 0)
        return 1
    add_pipeline(scheduler, monitor, settings, sessions, scp)
    try:
        web = start_alerts_and_web(settings, sessions, scp, scheduler, spool.root)
    except (OSError, ValueError) as exc:
        log.error("web.start_failed", error=type(exc).__name__, detail=str(exc)[:300])
        scp.stop(0)
        stop_receivers(children, 0)
        return 1
    try:
        mllp = start_marker_listener(settings, sessions)
    except OSError as exc:
        log.error("markers.hl7.start_failed", error=type(exc).__name__, detail=str(exc)[:300])
        if web is not None:
            web.stop()
        scp.stop(0)
        stop_receivers(children, 0)
        return 1
    scheduler.start()
    log.info(
        "agent.started", spool=str(spool.root), database=engine.dialect.name, receiver_processes=receivers
    )
    receivers_clean = True
    try:
        while not stop.wait(0.25 if counters else 1.0):
            if counters is not None:
                counters.merge()
                receivers_clean &= reap_receivers(children)
    finally:
        if mllp is not None:
            mllp.stop()
        if web is not None:
            web.stop()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        scp.stop(settings.dicom.shutdown_grace_s)
        scheduler.shutdown(wait=True)
        receivers_clean &= stop_receivers(children, settings.dicom.shutdown_grace_s + 15)
        if counters is not None:
            counters.merge()
        scp.index.close()  # also fsyncs the write-ahead log the receivers committed to
        if receivers_clean:
            spool.mark_clean()
        engine.dispose()
    log.info("agent.stopped")
    return 0


# Receiver processes started when ``dicom.receiver_processes`` is 0 (one per core, at most this many).
AUTO_RECEIVERS_MAX = 4


def writer_lock_path(engine: Any) -> Path | None:
    """The file beside a SQLite database whose flock the receivers' index writers take around each commit."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(f"{database}-writer.lock")


def run_receiver(
    settings: Any,
    spool: Spool,
    engine: Any,
    listener: Any,
    writer_lock: Path | None,
    counters: ReceiveCounters,
    stop: threading.Event,
) -> int:
    """A receiver process: one more listener on the shared port, until a signal or the first process ends."""
    parent = os.getppid()
    engine.dispose(close=False)  # the parent's pooled connections (none after its dispose) stay its own
    scp = StoreSCP(
        settings.dicom,
        spool,
        session_factory(engine),
        listener=listener,
        writer_lock=writer_lock,
        counters=counters,
    )
    try:
        scp.start()
    except (OSError, ValueError) as exc:
        log.error("scp.start_failed", error=type(exc).__name__, detail=str(exc)[:300])
        scp.index.close()
        return 1
    while not stop.wait(0.5):
        if os.getppid() != parent:  # the first process is gone: stop accepting
            break
    scp.stop(settings.dicom.shutdown_grace_s)
    scp.index.close()
    engine.dispose()
    return 0


def reap_receivers(children: list[int]) -> bool:
    """Remove receivers that exited from ``children``; False when one of them exited with an error."""
    clean = True
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.remove(pid)
            code = os.waitstatus_to_exitcode(status)
            clean &= code == 0
            log.error("scp.receiver.exited", pid=pid, code=code)
    return clean


def stop_receivers(children: list[int], timeout_s: float) -> bool:
    """Signal the receivers, wait up to ``timeout_s`` for them, kill the rest; True if all exited with 0."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    clean = True
    deadline = time.monotonic() + timeout_s
    for pid in children:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                clean &= os.waitstatus_to_exitcode(status) == 0
                break
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                clean = False
                break
            time.sleep(0.05)
    children.clear()
    return clean
