"""SIGKILL at random moments while a study arrives over several associations: no acknowledged instance is
ever lost.

One agent (two receiver processes) receives a study of 90 CT instances (every tenth one larger than the
in-memory limit, so it streams through ``.incoming/``) from three pynetdicom associations at once. At a
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
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, _config
from support.agentproc import Agent
from support.dicomgen import make_study, save, uid
from support.rawpeer import process_tree

pytestmark = pytest.mark.integration

TRIALS = 20
INSTANCES = 90
ASSOCIATIONS = 3
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


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
    """Three associations sending the not-yet-acknowledged instances until told to stop or killed."""

    def __init__(self, agent: Agent, files: dict[str, Path], acked: set[str]) -> None:
        self.agent = agent
        self.files = files
        self.acked = acked
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        todo = [u for u in self.files if u not in self.acked]
        for k in range(ASSOCIATIONS):
            t = threading.Thread(target=self._send, args=(todo[k::ASSOCIATIONS],), daemon=True)
            t.start()
            self.threads.append(t)

    def _send(self, uids: list[str]) -> None:
        ae = AE(ae_title="KILLTEST")
        ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        assoc = ae.associate("127.0.0.1", self.agent.port, ae_title="LIVERAGENT")
        if not assoc.is_established:
            return
        try:
            for u in uids:
                if not assoc.is_established:
                    return
                status = assoc.send_c_store(self.files[u])
                if status and status.Status == 0x0000:
                    with self.lock:
                        self.acked.add(u)
        finally:
            if assoc.is_established:
                assoc.release()
            else:
                assoc.abort()

    def join(self) -> None:
        for t in self.threads:
            t.join(30)
            assert not t.is_alive()


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
    acked: set[str] = set()
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send each file's bytes as they are
    try:
        for trial in range(TRIALS):
            if len(acked) == len(files):  # everything arrived: send the study again (replacements)
                acked.clear()
            before = len(acked)
            sender = Sender(agent, files, acked)
            sender.start()
            time.sleep(rng.uniform(0.05, 1.0))
            kill_everything(agent)
            sender.join()
            agent.start()
            assert_every_acknowledged_instance_is_kept(agent, files, acked)
            print(f"trial {trial + 1}: {len(acked) - before} more acknowledged, {len(acked)} kept")
        # every start after a kill walked the spool (the kill left no clean-stop marker)
        assert len(agent.events("spool.reconciled")) == TRIALS
        sender = Sender(agent, files, acked)
        sender.start()
        sender.join()
        assert acked == set(files)
        assert_every_acknowledged_instance_is_kept(agent, files, acked)
        assert agent.scalar("SELECT count(*) FROM instances") == INSTANCES
        assert not list((agent.spool / ".incoming").iterdir())
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
    assert agent.stop() == 0
