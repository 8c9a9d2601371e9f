"""Hostile and broken peers against a running ``serve``: each costs bounded memory and one slot for a
bounded time, and a well-behaved sender keeps being served.

Every attack runs on loopback with short timeouts (ACSE 2 s, network 3 s, 6 slots per receiver process, two
receiver processes) and modest sizes. Each test asserts that a C-ECHO from DCMTK's echoscu succeeds within
5 s during and after the attack, that the resident memory of the agent's processes grows by less than
200 MB, that the agent itself closes the attacking connections within the configured timeouts, and that
the instances stored before the attack are untouched (files and index rows).
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from support.agentproc import Agent, dcmtk, wait_until
from support.dicomgen import make_study, save
from support.rawpeer import process_tree, send_raw, status_field

pytestmark = pytest.mark.integration

ACSE_S = 2.0
NETWORK_S = 3.0
SLOTS = 6
SETTINGS = {
    "LIVER_AGENT_DICOM__ACSE_TIMEOUT_S": str(ACSE_S),
    "LIVER_AGENT_DICOM__NETWORK_TIMEOUT_S": str(NETWORK_S),
    "LIVER_AGENT_DICOM__MAX_ASSOCIATIONS": str(SLOTS),
    "LIVER_AGENT_DICOM__RECEIVER_PROCESSES": "2",
}
# Slack for a loaded machine on top of a configured timeout.
SLACK_S = 2.0
ECHO_WITHIN_S = 5.0
RSS_GROWTH_MAX_KB = 200 * 1024


def echo_within(agent: Agent, seconds: float = ECHO_WITHIN_S) -> float:
    """One C-ECHO from echoscu; asserts it succeeds within ``seconds`` and returns how long it took."""
    start = time.monotonic()
    result = dcmtk(
        "echoscu", "-to", "5", "-ta", "5", "-td", "5", "-aet", "GOODPEER", "-aec", "LIVERAGENT",
        "127.0.0.1", agent.port, timeout=seconds + 1,
    )  # fmt: skip
    took = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < seconds, f"C-ECHO took {took:.1f} s"
    return took


class Watch:
    """Resident memory of the agent's processes (sampled every 50 ms) and what was stored before."""

    def __init__(self, agent: Agent) -> None:
        assert agent.proc is not None
        self.agent = agent
        self.pid = agent.proc.pid
        self.baseline_kb = self.rss_kb()
        self.peak_kb = self.baseline_kb
        self.baseline_threads = self.threads()
        self.peak_threads = self.baseline_threads
        self.stored = self.snapshot()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def rss_kb(self) -> int:
        return sum(status_field(pid, "VmRSS") for pid in process_tree(self.pid))

    def threads(self) -> int:
        return sum(status_field(pid, "Threads") for pid in process_tree(self.pid))

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_kb = max(self.peak_kb, self.rss_kb())
            self.peak_threads = max(self.peak_threads, self.threads())

    def snapshot(self) -> tuple[dict[str, str], list[tuple]]:
        files = {
            str(p.relative_to(self.agent.spool)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.agent.spool.rglob("*.dcm"))
            if ".incoming" not in p.parts
        }
        rows = self.agent.query("SELECT sop_uid, path, size FROM instances ORDER BY sop_uid")
        return files, rows

    def finish(self) -> int:
        """Stop sampling; assert the memory bound and that nothing stored changed. Returns the growth (kB)."""
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self.rss_kb())
        growth = self.peak_kb - self.baseline_kb
        print(
            f"\n[figures] resident memory {self.baseline_kb / 1024:.0f} MB before, peak growth"
            f" {growth / 1024:.1f} MB; threads {self.baseline_threads} before, peak {self.peak_threads}"
        )
        assert growth < RSS_GROWTH_MAX_KB, f"resident memory grew by {growth / 1024:.0f} MB"
        assert wait_until(lambda: self.threads() <= self.baseline_threads + 2, SLACK_S), self.threads()
        assert self.snapshot() == self.stored
        return growth


@pytest.fixture
def agent(make_agent, tmp_path: Path) -> Iterator[Agent]:
    agent = make_agent(**SETTINGS).start()
    study = make_study(tmp_path / "before", key="before", ct_instances=2)
    result = agent.store(*study.files)
    assert result.returncode == 0, result.stderr
    assert agent.scalar("SELECT count(*) FROM instances") == len(study.files)
    yield agent
    log = agent.all_logs()
    assert "Traceback" not in log
    assert agent.stop() == 0


@contextmanager
def attack(agent: Agent) -> Iterator[Watch]:
    watch = Watch(agent)
    yield watch
    echo_within(agent)  # after the attack
    watch.finish()


def closed_by_agent(sock: socket.socket, within: float) -> tuple[float, bytes]:
    """Seconds until the agent closes ``sock`` (read to EOF or reset), and what it sent before."""
    start = time.monotonic()
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the agent kept an attacking connection open for more than {within} s")
    return time.monotonic() - start, received


def connect(agent: Agent) -> socket.socket:
    return socket.create_connection(("127.0.0.1", agent.port), timeout=5)


def test_stalled_association_requests_are_aborted_and_never_block_a_real_sender(agent: Agent) -> None:
    with attack(agent):
        stalled = []
        for _ in range(40):
            s = connect(agent)
            s.sendall(b"\x01\x00\x00")  # three bytes of a PDU header, then silence
            stalled.append((s, time.monotonic()))
        echo_within(agent)  # during: every slot is taken by a stalled peer, the oldest makes room
        longest = 0.0
        for s, sent_at in stalled:
            closed_by_agent(s, ACSE_S + SLACK_S)
            longest = max(longest, time.monotonic() - sent_at)
            s.close()
        print(f"\n[figures] 40 stalled connections: the last closed {longest:.2f} s after its bytes")
        assert longest < ACSE_S + SLACK_S
    aborted = agent.events("scp.association.aborted")
    reasons = {e["reason"] for e in aborted}
    assert "association request not complete within the ACSE timeout" in reasons
    assert any(r.startswith("evicted") for r in reasons)


def test_a_pdu_longer_than_the_maximum_is_aborted_before_anything_is_allocated(agent: Agent) -> None:
    with attack(agent):
        for _ in range(10):
            s = connect(agent)
            s.sendall(bytes.fromhex("0100FFFFFFFF"))  # an A-ASSOCIATE-RQ of 4 GiB
            took, received = closed_by_agent(s, SLACK_S)
            assert received[:1] == b"\x07", received  # A-ABORT
            assert took < SLACK_S
            s.close()
        echo_within(agent)
        # Once an association is established, a P-DATA-TF longer than the maximum PDU ends it the same way.
        from pynetdicom import AE

        ae = AE(ae_title="LONGPDU")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", agent.port, ae_title="LIVERAGENT")
        assert assoc.is_established
        assoc.dul.socket.socket.sendall(bytes.fromhex("0400FFFFFFF0"))
        assert wait_until(lambda: assoc.is_aborted or not assoc.is_alive(), SLACK_S)
        echo_within(agent)
    longer = [e for e in agent.events("scp.association.aborted") if "longer" in e["reason"]]
    assert len(longer) == 11 and {e["limit"] for e in longer} == {262144, 262144 + 6}


def test_a_connect_and_drop_flood_leaves_no_threads_and_real_senders_are_served(agent: Agent) -> None:
    assert agent.proc is not None
    with attack(agent):
        stop = threading.Event()
        echoes: list[float] = []

        def echo_during() -> None:
            while not stop.is_set():
                echoes.append(echo_within(agent))

        echoing = threading.Thread(target=echo_during)
        echoing.start()
        try:
            for i in range(400):
                s = socket.socket()
                s.connect(("127.0.0.1", agent.port))
                if i % 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
                s.close()
        finally:
            stop.set()
            echoing.join()
        assert echoes, "no C-ECHO completed during the flood"
        print(f"\n[figures] flood of 400: {len(echoes)} C-ECHO during it, slowest {max(echoes):.2f} s")


def deflate_bomb(path: Path, value_bytes: int) -> Path:
    """A CT instance, deflated, whose first element is a text value of ``value_bytes`` spaces."""
    study = make_study(path.parent / "bomb-src", key="bomb", ct_instances=1)
    ds = pydicom.dcmread(study.files[0])
    body = Dataset()
    for elem in ds:
        body.add(elem)
    raw = bytearray()
    # (0008,0001) with VR UT: sorts before every identifying attribute.
    raw += struct.pack("<HH2s2xI", 0x0008, 0x0001, b"UT", value_bytes)
    encoded = _encode_explicit(body)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = path.open("wb")
    meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2.1.99")
    out.write(meta)
    out.write(compressor.compress(bytes(raw)) + compressor.flush(zlib.Z_FULL_FLUSH))
    chunk = 1 << 22
    # After a full flush the compressor starts afresh, so one compressed block of spaces can be repeated.
    block = compressor.compress(b" " * chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    for _ in range(value_bytes // chunk):
        out.write(block)
    out.write(compressor.compress(b" " * (value_bytes % chunk) + encoded) + compressor.flush())
    out.close()
    return path


def _encode_explicit(ds: Dataset) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    write_dataset(buf, ds)
    return buf.getvalue()


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1138.1"
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    write_file_meta_info(buf, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buf.getvalue()


def test_a_deflate_bomb_is_refused_after_a_bounded_prefix(agent: Agent, tmp_path: Path) -> None:
    bomb = deflate_bomb(tmp_path / "bomb.dcm", 1 << 30)  # 1 GiB of text in about 1 MB
    assert bomb.stat().st_size < 2 << 20
    with attack(agent):
        start = time.monotonic()
        assert send_raw(agent.port, bomb) == "0xA700"
        assert time.monotonic() - start < 15
        echo_within(agent)
    refused = agent.events("scp.store.refused")
    assert [e["reason"] for e in refused] == [
        "deflated dataset: identifying attributes not within 4194304 bytes"
    ]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_identifying_attributes_with_a_non_standard_vr_are_refused(agent: Agent, tmp_path: Path) -> None:
    study = make_study(tmp_path / "vr", key="vr", ct_instances=1)
    good = pydicom.dcmread(study.files[0])
    cases = {"PatientID as OB": (0x00100020, "OB", b"PID00001"),
             "PatientID as UI": (0x00100020, "UI", "1.2.3.4"),
             "PatientID as FD": (0x00100020, "FD", 1.5),
             "SOPInstanceUID as OB": (0x00080018, "OB", good.SOPInstanceUID.encode() + b"\0")}  # fmt: skip
    with attack(agent):
        for name, (tag, vr, value) in cases.items():
            ds = pydicom.dcmread(study.files[0])
            del ds[tag]
            ds.add_new(tag, vr, value)
            path = save(ds, tmp_path / "vr" / f"{vr}-{tag:08X}.dcm")
            assert send_raw(agent.port, path, good.SOPClassUID, "1.2.840.10008.1.2.1") == "0xA900", name
        echo_within(agent)
    reasons = [e["reason"] for e in agent.events("scp.store.refused")]
    assert len(reasons) == 4 and all("VR" in r for r in reasons), reasons


def test_a_malformed_association_request_is_one_warning_without_traceback(agent: Agent) -> None:
    garbage = [
        b"\x01\x00" + struct.pack(">I", 68) + b"\xff" * 68,  # header fields and items of nonsense
        b"\x01\x00" + struct.pack(">I", 10) + b"\x00\x01\x00\x00" + b"\x00" * 6,  # cut short
        b"\x09\x00" + struct.pack(">I", 4) + b"\x00" * 4,  # no such PDU type
    ]
    with attack(agent):
        for pdu in garbage:
            s = connect(agent)
            s.sendall(pdu)
            closed_by_agent(s, ACSE_S + SLACK_S)
            s.close()
        echo_within(agent)
    log = agent.all_logs()
    warnings = agent.events("scp.association.malformed")
    assert len(warnings) == len(garbage), warnings
    assert all(w["level"] == "warning" and w["reason"] for w in warnings)
    assert not [e for e in agent.events() if e.get("level") in ("error", "critical")]
    assert "Traceback" not in log


def test_connections_beyond_the_slots_get_the_standard_rejection_at_once(agent: Agent) -> None:
    from pynetdicom import AE

    ae = AE(ae_title="HOGGER")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.network_timeout = (
        30  # the hogger itself waits; the agent's network timeout (3 s) ends its associations
    )
    with attack(agent):
        hogs = [ae.associate("127.0.0.1", agent.port, ae_title="LIVERAGENT") for _ in range(2 * SLOTS)]
        assert all(a.is_established for a in hogs), "every slot of both receiver processes is taken"
        start = time.monotonic()
        refused = dcmtk(
            "echoscu", "-aet", "GOODPEER", "-aec", "LIVERAGENT", "127.0.0.1", agent.port, timeout=10
        )
        took = time.monotonic() - start
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stdout + refused.stderr
        assert "Local Limit Exceeded" in refused.stdout + refused.stderr
        assert took < 1.5, f"the rejection took {took:.2f} s"
        # The idle associations end after the network timeout; the slots are free again.
        assert wait_until(lambda: all(not a.is_established for a in hogs), NETWORK_S + SLACK_S)
        echo_within(agent)
    rejected = agent.events("scp.association.rejected")
    assert rejected and rejected[0]["reason"] == "local limit exceeded"
