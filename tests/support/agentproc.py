"""Test-side helpers shared by the suites: free ports, waiting, DCMTK runs and our agent as a subprocess.

Every server binds 127.0.0.1 on a free port chosen here. DCMTK tools run with ``TCP_NODELAY=1``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool with Nagle's algorithm off, as the brief asks of every peer."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@dataclass
class Agent:
    """One ``liver-agent serve`` process with its own spool, database and log file."""

    workdir: Path
    port: int
    env_overrides: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def db_path(self) -> Path:
        return self.workdir / "agent.db"

    @property
    def spool(self) -> Path:
        return self.workdir / "spool"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"agent-{self.runs}.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVER_AGENT_")}
        env.update(
            {
                "LIVER_AGENT_DICOM__HOST": "127.0.0.1",
                "LIVER_AGENT_DICOM__PORT": str(self.port),
                "LIVER_AGENT_STORAGE__SPOOL_DIR": str(self.spool),
                "LIVER_AGENT_STORAGE__MIN_FREE_MB": "0",
                "LIVER_AGENT_DATABASE__URL": f"sqlite:///{self.db_path}",
                "LIVER_AGENT_STABILITY__STABLE_AFTER_S": "1.5",
                "LIVER_AGENT_STABILITY__CHECK_INTERVAL_S": "0.25",
                "LIVER_AGENT_DICOM__SHUTDOWN_GRACE_S": "5",
                "LIVER_AGENT_LOG__FORMAT": "json",
                "LIVER_AGENT_LOG__LEVEL": "INFO",
                "LIVER_AGENT_WEB__ENABLED": "false",
                # These tests are about receiving: the job rows must stay as the stability monitor wrote them.
                "LIVER_AGENT_PIPELINE__ENABLED": "false",
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.env_overrides)
        return env

    def start(self) -> Agent:
        assert self.proc is None
        self.runs += 1
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "serve"],
            cwd=self.workdir,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if not wait_until(lambda: self.proc.poll() is not None or "agent.started" in self.log_text(), 30):
            self.kill()
            raise RuntimeError(f"agent did not start:\n{self.log_text()}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log_text()}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_text(self, run: int | None = None) -> str:
        path = self.workdir / f"agent-{run or self.runs}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> str:
        return "".join(self.log_text(i) for i in range(1, self.runs + 1))

    def events(self, name: str | None = None) -> list[dict]:
        out = []
        for line in self.all_logs().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if name is None or rec.get("event") == name:
                out.append(rec)
        return out

    def query(self, sql: str, **params) -> list[tuple]:
        engine = create_engine(f"sqlite:///{self.db_path}")
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql), params).all()]
        finally:
            engine.dispose()

    def scalar(self, sql: str, **params):
        rows = self.query(sql, **params)
        return rows[0][0] if rows else None

    def echo(self, calling: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
        return dcmtk("echoscu", "-aet", calling, "-aec", "LIVERAGENT", "127.0.0.1", self.port)

    def store(self, *files: Path, calling: str = "STORESCU", extra: tuple[str, ...] = ("--propose-rle",)):
        # --propose-rle: per SOP class one context for RLE Lossless and one for the uncompressed syntaxes,
        # so each generated file travels in its own transfer syntax and nothing is transcoded.
        return dcmtk(
            "storescu", *extra, "-aet", calling, "-aec", "LIVERAGENT", "127.0.0.1", self.port, *files
        )

    def wait_state(self, study_uid: str, state: str, timeout: float = 20) -> bool:
        return wait_until(
            lambda: (
                self.db_path.exists()
                and self.scalar("SELECT state FROM studies WHERE study_uid = :u", u=study_uid) == state
            ),
            timeout,
        )
