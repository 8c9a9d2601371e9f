"""Ingest benchmark: DCMTK ``storescu`` sending to ``storescp``, to Orthanc and to ``liver-agent serve``.

Usage: ``.venv/bin/python bench/ingest.py [--rounds 3] [--instances 300] [--only agent,orthanc,storescp]``

Two series are generated with pydicom (N instances of 512x512 and N of 64x64 CT, 16-bit, explicit VR little
endian) into a tmpfs directory (``/dev/shm`` when present) so reading them costs the sender no disk I/O.
Each series is sent over 1 association (one ``storescu``) and over 4 associations (the files split across 4
``storescu`` processes started together) to each target in turn, several rounds, alternating the order of
targets between rounds. Before every send the Study/Series/SOP Instance UIDs in the files are rewritten in
place (fixed-width UIDs), so every target always receives new instances (no duplicate short-cuts).

Targets, all started and stopped here with their own temporary storage and free ports on 127.0.0.1:
- ``storescp --fork -od DIR``: DCMTK's receiver, writes files, no fsync (the speed of light here);
- Orthanc with its defaults (``SyncStorageArea`` on: fsync of every file; SQLite index);
- ``liver-agent serve`` (``PIPELINE__ENABLED=false``, web off, JSON logs at INFO to a file; fsync of every
  file before every answer, and of its directory where the filesystem needs it; index committed before
  every answer, SQLite ``synchronous=NORMAL`` with start-up reconciliation, see ``agent/db/index.py``;
  ``dicom.receiver_processes`` at its default, one receiver process per core, at most 4).
Every DCMTK tool and Orthanc run with ``TCP_NODELAY=1`` in their environment.

Output: one line per target and scenario (median instances/s and MB/s over the rounds, and every round),
the agent's peak RSS (the largest VmHWM of the serve process and its receiver processes; a comment line
gives each one, their sum and the summed proportional set size), then ``ratio_vs_orthanc=<min over
scenarios of agent/orthanc>`` and, last, ``ratio_vs_storescp=<min over scenarios of agent/storescp>``.

Network namespace: storescp and Orthanc bind every interface, so as root the script re-executes itself
inside ``unshare --net`` with only loopback up (nothing is reachable from outside, and nothing leaves the
machine). Set ``INGEST_BENCH_NO_NETNS=1`` to skip that (for example when not root).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parents[1]
NETNS_MARK = "INGEST_BENCH_IN_NETNS"
CALLING_AET = "BENCHSCU"
# UIDs are "<ROOT>.<run>.<kind>.<index>", each numeric part of fixed width, so they can be patched in place.
UID_ROOT = "1.2.826.0.1.3680043.10.1138"
RUN_WIDTH = 7
FIRST_RUN = 1_000_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def peer_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


# -- data ----------------------------------------------------------------------------------------------


@dataclass
class Series:
    name: str
    files: list[Path]
    # (file, byte offset) of every run number inside a UID value, for in-place patching.
    run_offsets: list[list[int]]
    bytes_total: int
    run: int = FIRST_RUN

    def next_run(self) -> None:
        """Give every instance (and the study and series) new UIDs, same length, in place."""
        self.run += 1
        new = str(self.run).encode()
        assert len(new) == RUN_WIDTH
        for path, offsets in zip(self.files, self.run_offsets, strict=True):
            with path.open("r+b") as f, mmap.mmap(f.fileno(), 0) as m:
                for off in offsets:
                    m[off : off + RUN_WIDTH] = new


def generate(directory: Path, name: str, rows: int, count: int) -> Series:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    directory.mkdir(parents=True)
    run = str(FIRST_RUN)
    study = f"{UID_ROOT}.{run}.1.1"
    series = f"{UID_ROOT}.{run}.2.{rows}"
    pixels = os.urandom(rows * rows * 2)
    files, offsets = [], []
    total = 0
    for i in range(count):
        sop = f"{UID_ROOT}.{run}.3.{100000 + i}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyDate = "20240102"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "BENCH1"
        ds.Modality = "CT"
        ds.StudyDescription = "Ingest benchmark"
        ds.SeriesDescription = f"{rows}x{rows}"
        ds.PatientName = "Bench^Patient"
        ds.PatientID = "BENCH-0001"
        ds.PatientBirthDate = "19600101"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SeriesNumber = rows
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, -i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 1
        ds.PixelSpacing = [0.7, 0.7]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = rows
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = pixels
        path = directory / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        raw = path.read_bytes()
        needle = f"{UID_ROOT}.{run}.".encode()
        found, start = [], 0
        while (at := raw.find(needle, start)) >= 0:
            found.append(at + len(UID_ROOT) + 1)
            start = at + 1
        assert len(found) == 4, found  # meta SOP instance, SOP instance, study, series
        files.append(path)
        offsets.append(found)
        total += len(raw)
    return Series(name, files, offsets, total)


# -- targets -------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    aet: str
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def check(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} is not running; see {self.workdir}")


class StoreSCP(Target):
    def start(self) -> None:
        out = self.workdir / "files"
        out.mkdir(parents=True)
        log = (self.workdir / "storescp.log").open("wb")
        # --fork: one child per association, so 4 associations are received in parallel.
        self.proc = subprocess.Popen(
            ["storescp", "--fork", "-aet", self.aet, "-od", str(out), str(self.port)],
            env=peer_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if not wait_port(self.port):
            raise RuntimeError("storescp did not start")


class Orthanc(Target):
    def start(self) -> None:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True)
        http_port = free_port()
        config = {
            "Name": "ingest-bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": http_port,
            "DicomPort": self.port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "Plugins": [],
            "SaveJobs": False,
        }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config))
        log = (self.workdir / "orthanc.log").open("wb")
        self.proc = subprocess.Popen(
            [shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(path)],
            env=peer_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/system", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("Orthanc did not start")
        if not wait_port(self.port):
            raise RuntimeError("Orthanc's DICOM port did not open")


class Agent(Target):
    extra_env: ClassVar[dict[str, str]] = {}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVER_AGENT_")}
        env.update(
            {
                "LIVER_AGENT_DICOM__HOST": "127.0.0.1",
                "LIVER_AGENT_DICOM__PORT": str(self.port),
                "LIVER_AGENT_DICOM__AE_TITLE": self.aet,
                "LIVER_AGENT_STORAGE__SPOOL_DIR": str(self.workdir / "spool"),
                "LIVER_AGENT_DATABASE__URL": f"sqlite:///{self.workdir / 'agent.db'}",
                "LIVER_AGENT_PIPELINE__ENABLED": "false",
                "LIVER_AGENT_WEB__ENABLED": "false",
                "LIVER_AGENT_LOG__FORMAT": "json",
                "LIVER_AGENT_LOG__LEVEL": "INFO",
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.extra_env)
        log_path = self.workdir / "agent.log"
        log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "serve"],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited:\n{log_path.read_text()[-3000:]}")
            if "agent.started" in log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError("agent did not start")

    def peak_rss_kb(self) -> int:
        """VmHWM of the serve process and of every descendant (receiver processes): the largest one."""
        return max(self.peaks_kb(), default=0)

    def peaks_kb(self) -> list[int]:
        """VmHWM of the serve process and of each descendant."""
        assert self.proc is not None
        return [_vmhwm(pid) for pid in [self.proc.pid, *_descendants(self.proc.pid)]]

    def pss_kb(self) -> int:
        """Proportional set size now, summed over the processes (pages shared after fork counted once)."""
        assert self.proc is not None
        return sum(_pss(pid) for pid in [self.proc.pid, *_descendants(self.proc.pid)])


def _vmhwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    out = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in map(int, children):
        out += [child, *_descendants(child)]
    return out


# -- sending -------------------------------------------------------------------------------------------


def send(target: Target, series: Series, associations: int) -> float:
    """Send every file of ``series`` to ``target`` over ``associations`` parallel storescu; return seconds."""
    target.check()
    chunks = [series.files[i::associations] for i in range(associations)]
    cmd = ["storescu", "-aet", CALLING_AET, "-aec", target.aet, "127.0.0.1", str(target.port)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*cmd, *map(str, chunk)],
            env=peer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for chunk in chunks
    ]
    outputs = [p.communicate()[0].decode(errors="replace") for p in procs]
    elapsed = time.perf_counter() - start
    for p, out in zip(procs, outputs, strict=True):
        bad = [ln for ln in out.splitlines() if ln.startswith(("E:", "F:")) or "Failed" in ln]
        if p.returncode != 0 or bad:
            raise RuntimeError(f"storescu to {target.name} failed ({p.returncode}):\n" + "\n".join(bad[:10]))
    return elapsed


# -- main ----------------------------------------------------------------------------------------------


def reexec_in_netns() -> None:
    if os.environ.get(NETNS_MARK) or os.environ.get("INGEST_BENCH_NO_NETNS") or os.geteuid() != 0:
        return
    if not shutil.which("unshare") or not shutil.which("ip"):
        return
    env = {**os.environ, NETNS_MARK: "1"}
    args = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    os.execvpe(
        "unshare",
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *args],
        env,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--only", default="storescp,orthanc,agent", help="targets to run, comma-separated")
    parser.add_argument("--scenarios", default="512x1,64x1,512x4,64x4", help="<rows>x<associations>,...")
    parser.add_argument(
        "--agent-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment of the agent"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args()
    reexec_in_netns()
    Agent.extra_env = dict(kv.split("=", 1) for kv in args.agent_env)
    for tool in ("storescu", "storescp"):
        if not shutil.which(tool):
            print(f"{tool} not found: install DCMTK (scripts/install-system-deps.sh)", file=sys.stderr)
            return 2

    shm = Path("/dev/shm")
    data_root = Path(tempfile.mkdtemp(prefix="ingest-bench-data-", dir=shm if shm.is_dir() else None))
    work = Path(
        tempfile.mkdtemp(prefix="ingest-bench-", dir="/var/tmp" if Path("/var/tmp").is_dir() else None)
    )
    scenarios = [(int(r), int(a)) for r, a in (s.split("x") for s in args.scenarios.split(","))]
    names = args.only.split(",")
    classes = {
        "storescp": (StoreSCP, "STORESCP"),
        "orthanc": (Orthanc, "ORTHANC"),
        "agent": (Agent, "LIVERAGENT"),
    }
    targets = [classes[n][0](n, classes[n][1], work / n) for n in names]
    results: dict[tuple[str, int, int], list[float]] = {}
    try:
        print(
            f"generating {args.instances} instances each of {sorted({r for r, _ in scenarios})} ...",
            flush=True,
        )
        data = {
            rows: generate(data_root / str(rows), f"{rows}x{rows}", rows, args.instances)
            for rows in sorted({r for r, _ in scenarios})
        }
        for t in targets:
            t.start()
        print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}", flush=True)
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
            for rows, assocs in scenarios:
                for t in order:
                    series = data[rows]
                    series.next_run()
                    seconds = send(t, series, assocs)
                    results.setdefault((t.name, rows, assocs), []).append(seconds)
                    rate = len(series.files) / seconds
                    print(
                        f"  round {rnd + 1} {t.name:9s} {rows}x{rows} assoc={assocs}: {rate:7.1f} inst/s",
                        flush=True,
                    )
        agent = next((t for t in targets if isinstance(t, Agent)), None)
        peak_kb = agent.peak_rss_kb() if agent else 0
        peaks = agent.peaks_kb() if agent else []
        pss_kb = agent.pss_kb() if agent else 0
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(data_root, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print("\nresults (median over rounds; instances/s, MB/s; every round in brackets)")
    medians: dict[tuple[str, int, int], float] = {}
    for (name, rows, assocs), secs in results.items():
        n = args.instances
        rates = [n / s for s in secs]
        med = statistics.median(rates)
        medians[(name, rows, assocs)] = med
        mbs = med * data[rows].bytes_total / n / 1e6
        rounds = ", ".join(f"{r:.0f}" for r in rates)
        print(
            f"{name:9s} {rows:3d}x{rows:<3d} assoc={assocs}  {med:7.1f} inst/s  {mbs:7.1f} MB/s  [{rounds}]"
        )
    if peaks:
        per = ", ".join(f"{kb / 1024:.1f}" for kb in peaks)
        print(
            f"# agent processes={len(peaks)}: peak RSS each [{per}] MB,"
            f" sum of peaks {sum(peaks) / 1024:.1f} MB,"
            f" proportional set size at the end {pss_kb / 1024:.1f} MB"
        )
        print(f"agent_peak_rss_mb={peak_kb / 1024:.1f}")
    for ref in ("orthanc", "storescp"):
        ratios = [
            medians[("agent", r, a)] / medians[(ref, r, a)]
            for r, a in scenarios
            if ("agent", r, a) in medians and (ref, r, a) in medians
        ]
        if ratios:
            detail = " ".join(
                f"{r}x{a}={medians[('agent', r, a)] / medians[(ref, r, a)]:.2f}" for r, a in scenarios
            )
            print(f"# agent/{ref} per scenario: {detail}")
    for ref in ("orthanc", "storescp"):
        ratios = [
            medians[("agent", r, a)] / medians[(ref, r, a)]
            for r, a in scenarios
            if ("agent", r, a) in medians and (ref, r, a) in medians
        ]
        if ratios:
            print(f"ratio_vs_{ref}={min(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
