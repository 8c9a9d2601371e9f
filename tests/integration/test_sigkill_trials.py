"""SIGKILL at random moments while a study arrives over several associations: no acknowledged instance is
ever lost.

One agent (two receiver processes) receives a study of 90 CT instances (every tenth one larger than the
in-memory limit, so it streams through ``.incoming/``) from three DCMTK storescu associations at once. At a
random moment every process of the agent is killed with SIGKILL; the agent is started again (the start-up
reconciliation runs, as after any unclean stop) and every instance that had been answered 0x0000 before the
kill must be indexed, with its file complete in the spool. The senders then carry on with what was not yet
acknowledged; 20 kill points in all, the seed printed for a rerun.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from support.agentproc import Agent
from support.dicomgen import make_study, save, uid
from support.rawpeer import process_tree

pytestmark = pytest.mark.integration

TRIALS = 20
INSTANCES = 90
ASSOCIATIONS = 3


def make_instances(directory: Path) -> dict[str, Path]:
    """SOP Instance UID -> file of one study; every tenth instance is 1.1 MB, the others 32 kB."""
    study = make_study(directory / "src", key="sigkill", ct_instances=1)
    template = pydicom.dcmread(study.files[0])
    series = uid("sigkill", "series")
    out = {}
    for i in range(INSTANCES):
        ds = template.copy()
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = uid("sigkill", i)
        ds.InstanceNumber = i + 1
        size = 740 if i % 10 == 0 else 128
        ds.Rows = ds.Columns = size
        ds.PixelData = os.urandom(size * size * 2)
        out[ds.SOPInstanceUID] = save(ds, directory / f"{i:03d}.dcm")
    return out


class Sender:
    """Three DCMTK storescu associations sending the not-yet-acknowledged instances, until done or killed.

    An instance counts as acknowledged when storescu reports a success response for it.
    """

    def __init__(self, agent: Agent, files: dict[str, Path], acked: set[str]) -> None:
        self.agent = agent
        self.files = files
        self.by_path = {str(path): sop for sop, path in files.items()}
        self.acked = acked
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> None:
        todo = [self.files[u] for u in self.files if u not in self.acked]
        env = {**os.environ, "TCP_NODELAY": "1"}
        for k in range(ASSOCIATIONS):
            chunk = todo[k::ASSOCIATIONS]
            if chunk:
                cmd = [
                    "storescu",
                    "-v",
                    "-aet",
                    "KILLTEST",
                    "-aec",
                    "LIVERAGENT",
                    "127.0.0.1",
                    str(self.agent.port),
                ]
                self.procs.append(
                    subprocess.Popen(
                        [*cmd, *map(str, chunk)],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                        env=env,
                    )
                )

    def join(self) -> None:
        for proc in self.procs:
            out, _ = proc.communicate(timeout=60)
            current = None
            for line in out.splitlines():
                if line.startswith("I: Sending file: "):
                    current = line.removeprefix("I: Sending file: ").strip()
                elif line.startswith("I: Received Store Response (Success)") and current:
                    self.acked.add(self.by_path[current])
                    current = None


def kill_everything(agent: Agent) -> None:
    assert agent.proc is not None
    for pid in reversed(process_tree(agent.proc.pid)):  # receivers first, then serve itself
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    agent.proc.wait()
    agent.proc = None


def assert_every_acknowledged_instance_is_kept(agent: Agent, files: dict[str, Path], acked: set[str]) -> None:
    rows = {sop: (path, size) for sop, path, size in agent.query("SELECT sop_uid, path, size FROM instances")}
    missing = sorted(acked - rows.keys())
    assert not missing, f"{len(missing)} acknowledged instances lost from the index"
    for sop in acked:
        path, size = rows[sop]
        stored = agent.spool / path
        assert stored.stat().st_size == size, sop
        ds = pydicom.dcmread(stored)
        assert ds.SOPInstanceUID == sop
        assert ds.PixelData == pydicom.dcmread(files[sop]).PixelData


def test_no_acknowledged_instance_is_lost_across_20_sigkills(make_agent, tmp_path: Path) -> None:
    seed = int(os.environ.get("SIGKILL_TRIALS_SEED", time.time_ns() % 1_000_000))
    print(f"\nSIGKILL trials seed {seed}")
    rng = random.Random(seed)
    files = make_instances(tmp_path / "study")
    agent = make_agent(LIVER_AGENT_DICOM__RECEIVER_PROCESSES="2").start()
    acked: set[str] = set()  # in this round of sending the study
    kept: set[str] = set()  # ever acknowledged: must survive every later kill, replacements included
    for trial in range(TRIALS):
        if len(acked) == len(files):  # everything arrived: send the study again (replacements)
            acked.clear()
        before = len(acked)
        sender = Sender(agent, files, acked)
        sender.start()
        time.sleep(rng.uniform(0.05, 0.6))
        kill_everything(agent)
        sender.join()
        kept |= acked
        agent.start()
        assert_every_acknowledged_instance_is_kept(agent, files, kept)
        print(f"trial {trial + 1}: {len(acked) - before} more acknowledged, {len(kept)} kept")
    # every start after a kill walked the spool (the kill left no clean-stop marker)
    assert len(agent.events("spool.reconciled")) == TRIALS
    for _ in range(3):  # the rest, with no kill (a slow response under load is simply sent again)
        sender = Sender(agent, files, acked)
        sender.start()
        sender.join()
        if acked == set(files):
            break
    assert acked == set(files)
    assert_every_acknowledged_instance_is_kept(agent, files, acked)
    assert agent.scalar("SELECT count(*) FROM instances") == INSTANCES
    assert not list((agent.spool / ".incoming").iterdir())
    assert agent.stop() == 0
