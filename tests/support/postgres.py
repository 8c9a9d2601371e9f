"""A throw-away PostgreSQL server for tests: its own cluster in a temporary directory, 127.0.0.1, free port.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` system user (created by
Debian's package) and the server runs under it. The server is always stopped by ``stop()``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support.agentproc import free_port


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgreSQL:
    workdir: Path
    port: int = 0
    user: str = "agent"
    database: str = "agent"
    # Addresses the server listens on (comma-separated); beyond 127.0.0.1 every client is trusted.
    listen: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.port = self.port or free_port()
        self.datadir = self.workdir / "data"
        self.sockdir = self.workdir / "sock"
        self._run_as = None
        if os.geteuid() == 0:
            self._run_as = pwd.getpwnam("postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _cmd(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        if self._run_as is not None:
            argv = ["runuser", "-u", self._run_as.pw_name, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, cwd="/")
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done

    def start(self) -> PostgreSQL:
        assert self.bindir is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        if self._run_as is not None:
            for path in (self.workdir, self.sockdir):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
            # The server user must be able to reach the directory through its parents.
            parent = self.workdir.parent
            while parent != parent.parent:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
                parent = parent.parent
        self._cmd(
            self.bindir / "initdb", "-D", self.datadir, "-U", self.user, "--auth=trust", "-E", "UTF8",
            "--no-sync", "--locale=C.UTF-8",
        )  # fmt: skip
        if self.listen != "127.0.0.1":
            with (self.datadir / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")
        self._cmd(
            self.bindir / "pg_ctl", "-D", self.datadir, "-l", self.workdir / "server.log", "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.sockdir} -h {self.listen} -c fsync=off", "start",
        )  # fmt: skip
        common = ("-h", "127.0.0.1", "-p", str(self.port), "-U", self.user)
        self._cmd(self.bindir / "createdb", *common, self.database)
        return self

    def stop(self) -> None:
        if self.bindir is None or not (self.datadir / "postmaster.pid").exists():
            return
        self._cmd(self.bindir / "pg_ctl", "-D", self.datadir, "-m", "fast", "-w", "stop", check=False)
        deadline = time.monotonic() + 10
        while (self.datadir / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def reset(self) -> None:
        """Drop and re-create the database (a fresh schema for the next test)."""
        assert self.bindir is not None
        common = ("-h", "127.0.0.1", "-p", str(self.port), "-U", self.user)
        self._cmd(self.bindir / "dropdb", *common, "--force", self.database)
        self._cmd(self.bindir / "createdb", *common, self.database)


def available() -> bool:
    return pg_bindir() is not None and (os.geteuid() != 0 or shutil.which("runuser") is not None)
