"""scripts/install-system-deps.sh against a fake package and service layer on PATH: it installs what is
missing with service starts forbidden for the duration, puts the administrator's policy back, and neither
kills nor stops anything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-system-deps.sh"

FAKE_APT = """#!/bin/sh
echo "apt-get $*" >> "$LOG"
if [ "$1" = "install" ] || [ "$2" = "install" ] || echo "$*" | grep -q " install "; then
  # What a package's postinst does: ask invoke-rc.d, which asks policy-rc.d, before starting the service.
  if [ -x "$POLICY_RC_D" ]; then "$POLICY_RC_D" orthanc start; echo "policy orthanc start -> $?" >> "$LOG"
  else echo "policy orthanc start -> none" >> "$LOG"; fi
fi
"""
RECORD = """#!/bin/sh
echo "$(basename "$0") $*" >> "$LOG"
"""


def run_installer(tmp_path: Path, *, installed: bool = False, own_policy: bool = False) -> tuple[str, Path]:
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    policy = tmp_path / "policy-rc.d"
    if own_policy:
        policy.write_text("#!/bin/sh\n# the administrator's own policy\nexit 0\n")
        policy.chmod(0o755)
    status = "install ok installed" if installed else "unknown ok not-installed"
    scripts = {
        "dpkg-query": f"#!/bin/sh\nprintf '{status}'\n",
        "id": "#!/bin/sh\necho 0\n",
        "apt-get": FAKE_APT,
        **{name: RECORD for name in ("pkill", "killall", "systemctl", "service", "invoke-rc.d", "sudo")},
    }
    for name, body in scripts.items():
        (fake / name).write_text(body)
        (fake / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "LOG": str(log), "POLICY_RC_D": str(policy)}
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return log.read_text(), policy


def test_missing_packages_are_installed_with_service_starts_forbidden(tmp_path: Path) -> None:
    calls, policy = run_installer(tmp_path)
    lines = calls.splitlines()
    install = next(line for line in lines if line.startswith("apt-get") and " install " in f" {line} ")
    assert "orthanc" in install.split() and "dcmtk" in install.split()
    assert "policy orthanc start -> 101" in lines  # invoke-rc.d would refuse the start
    assert not policy.exists()  # nothing left behind
    assert not [
        line for line in lines if line.split()[0] in {"pkill", "killall", "systemctl", "service", "sudo"}
    ]


def test_an_administrators_policy_is_put_back(tmp_path: Path) -> None:
    calls, policy = run_installer(tmp_path, own_policy=True)
    assert "policy orthanc start -> 101" in calls.splitlines()
    assert "the administrator's own policy" in policy.read_text()
    assert not list(tmp_path.glob("policy-rc.d.*"))


def test_nothing_to_install_touches_nothing(tmp_path: Path) -> None:
    calls, policy = run_installer(tmp_path, installed=True)
    assert calls == "" and not policy.exists()


def test_the_script_kills_and_stops_nothing_by_name() -> None:
    source = SCRIPT.read_text(encoding="utf-8")
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b(pkill|killall|kill)\b", code)
    assert not re.search(
        r"\b(systemctl|service|invoke-rc\.d)\b[^\n]*\b(stop|kill|restart|disable|mask)\b", code
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_install_puts_the_policy_back(tmp_path: Path, signum: int) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    policy = tmp_path / "policy-rc.d"
    started = tmp_path / "apt-started"
    scripts = {
        "dpkg-query": "#!/bin/sh\nprintf 'unknown ok not-installed'\n",
        "id": "#!/bin/sh\necho 0\n",
        # An install that hangs until the operator presses Ctrl-C.
        "apt-get": f'#!/bin/sh\nif echo "$*" | grep -q install; then touch {started}; exec sleep 60; fi\n',
    }
    for name, body in scripts.items():
        (fake / name).write_text(body)
        (fake / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "POLICY_RC_D": str(policy)}
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists() and policy.exists()
        os.killpg(proc.pid, signum)  # Ctrl-C (or a stop) reaches the whole foreground group
        assert proc.wait(30) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not policy.exists()
