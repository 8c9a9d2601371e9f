"""Two agent nodes on two hosts share one PostgreSQL database, with Orthanc as the PACS.

The hosts are network namespaces joined to the test's namespace by veth pairs (10.77.1.0/24 for node A,
10.77.2.0/24 for node B); PostgreSQL and Orthanc run in the test's namespace and listen on both links. Node A
reaches Orthanc through a relay the test controls. Orthanc routes studies to both nodes: each is processed
once, by the node that received it. Then the relay stops forwarding, a study is routed to A, A claims its job
and hangs in the C-FIND of the priors (mid-job), and the test kills A with SIGKILL. B takes the job over
after A's lease and heartbeat run out, retrieves the study from Orthanc by C-GET, and stores the result.
Every result reaches Orthanc exactly once: one SR and one PDF per study, every outbox row delivered on its
first attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.agentproc import REPO, free_port, wait_until
from support.orthanc import ORTHANC, Orthanc
from support.postgres import PostgreSQL, available

from tests.unit.sr.srgen import LesionSpec, ct_image, uid, write_study_sr

pytestmark = [pytest.mark.integration, pytest.mark.orthanc]

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"
SWITCH = {"a": "10.77.1.1", "b": "10.77.2.1"}
HOST = {"a": "10.77.1.2", "b": "10.77.2.2"}


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def hosts() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("two hosts need root and iproute2 (network namespaces and veth pairs)")
    names = {k: f"la-node{k}-{os.getpid()}" for k in ("a", "b")}
    try:
        for k, ns in names.items():
            ip("netns", "add", ns)
            ip("link", "add", f"sw{k}", "type", "veth", "peer", "name", f"eth{k}")
            ip("link", "set", f"eth{k}", "netns", ns)
            ip("addr", "add", f"{SWITCH[k]}/24", "dev", f"sw{k}")
            ip("link", "set", f"sw{k}", "up")
            ip("netns", "exec", ns, "ip", "addr", "add", f"{HOST[k]}/24", "dev", f"eth{k}")
            ip("netns", "exec", ns, "ip", "link", "set", f"eth{k}", "up")
            ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield names
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class Relay:
    """TCP relay from ``listen`` to ``target``; :meth:`stall` makes new connections hang unanswered."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.stalled = threading.Event()
        self.held: list[socket.socket] = []
        self.server = socket.create_server(listen)
        self.server.settimeout(0.2)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            if self.stalled.is_set():
                self.held.append(conn)  # read nothing, answer nothing: the peer waits
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.server.close()
        for conn in self.held:
            conn.close()


class Node:
    """``liver-agent serve`` in a network namespace."""

    def __init__(self, workdir: Path, ns: str, env: dict[str, str]) -> None:
        self.workdir, self.ns, self.env = workdir, ns, env
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                out.append(event)
        return out

    def start(self) -> Node:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVER_AGENT_")}
        env.update(self.env, PYTHONPATH=str(REPO), TCP_NODELAY="1")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "agent.cli", "serve"],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started = wait_until(lambda: self.proc.poll() is not None or "agent.started" in self.log_text(), 60)
        assert started and self.proc.poll() is None, self.log_text()[-3000:]
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def node_env(
    workdir: Path, name: str, aet: str, port: int, db_url: str, pacs: tuple[str, int], pacs_aet: str
) -> dict[str, str]:
    peers = {
        "pacs": {
            "ae_title": pacs_aet, "host": pacs[0], "port": pacs[1], "retrieve_method": "get",
            "acse_timeout_s": 60, "dimse_timeout_s": 60, "network_timeout_s": 60,
        }
    }  # fmt: skip
    return {
        "LIVER_AGENT_NODE__NAME": name,
        "LIVER_AGENT_NODE__HEARTBEAT_S": "0.5",
        "LIVER_AGENT_NODE__DEAD_AFTER_S": "3",
        "LIVER_AGENT_DICOM__HOST": "0.0.0.0",
        "LIVER_AGENT_DICOM__PORT": str(port),
        "LIVER_AGENT_DICOM__AE_TITLE": aet,
        "LIVER_AGENT_DICOM__RECEIVER_PROCESSES": "1",
        "LIVER_AGENT_DATABASE__URL": db_url,
        "LIVER_AGENT_STORAGE__SPOOL_DIR": str(workdir / "spool"),
        "LIVER_AGENT_STORAGE__MIN_FREE_MB": "0",
        "LIVER_AGENT_PIPELINE__ENABLED": "true",
        "LIVER_AGENT_PIPELINE__POLL_INTERVAL_S": "0.2",
        "LIVER_AGENT_PIPELINE__LEASE_S": "3",
        "LIVER_AGENT_PIPELINE__RETRY_AFTER_S": "0.5",
        "LIVER_AGENT_PIPELINE__RESULTS_DIR": str(workdir / "results"),
        "LIVER_AGENT_STABILITY__STABLE_AFTER_S": "0.6",
        "LIVER_AGENT_STABILITY__CHECK_INTERVAL_S": "0.2",
        "LIVER_AGENT_OUTBOX__INTERVAL_S": "0.2",
        "LIVER_AGENT_OUTBOX__BACKOFF_INITIAL_S": "0.5",
        "LIVER_AGENT_OUTBOX__BACKOFF_MAX_S": "1",
        "LIVER_AGENT_PEERS": json.dumps(peers),
        "LIVER_AGENT_WEB__ENABLED": "false",
        "LIVER_AGENT_LOG__FORMAT": "json",
        "LIVER_AGENT_LOG__LEVEL": "INFO",
    }


def study_files(directory: Path, patient: str, day: date) -> tuple[list[Path], str]:
    """A CT image and a measurement SR of one study (a baseline: the agent writes its table)."""
    study = f"{patient}-bl"
    ct = ct_image(patient, study, day)
    ct.StudyDescription = "CT ABDOMEN LIVER FOLLOW-UP"
    ct.BodyPartExamined = "ABDOMEN"
    ct_path = directory / f"{study}-ct.dcm"
    ct.save_as(ct_path, enforce_file_format=True)
    sr_path, _ = write_study_sr(
        directory,
        study,
        patient_id=patient,
        study=study,
        study_date=day,
        lesions=[LesionSpec("liver seg 7", uid(patient, "L1"), long_mm=42.0)],
    )
    return [ct_path, sr_path], uid(study)


def ours(orthanc: Orthanc, study_uid: str) -> list[str]:
    return sorted(
        str(i.get("SOPClassUID"))
        for i in orthanc.study_instances(study_uid)
        if i.get("Manufacturer") == "liver-agent"
    )


def test_two_nodes_share_the_work_and_one_completes_what_the_killed_one_started(
    hosts: dict[str, str], tmp_path: Path
) -> None:
    if not Path(ORTHANC).exists() or not available():
        pytest.skip("Orthanc and PostgreSQL are needed: run scripts/install-system-deps.sh")
    pg = PostgreSQL(tmp_path / "pg", listen="127.0.0.1,10.77.1.1,10.77.2.1").start()
    orthanc = Orthanc(tmp_path / "orthanc", free_port(), free_port())
    orthanc.start()
    relay = Relay((SWITCH["a"], free_port()), ("127.0.0.1", orthanc.dicom_port))
    nodes: dict[str, Node] = {}
    try:
        ports = {"a": free_port(), "b": free_port()}
        pacs = {"a": relay.server.getsockname(), "b": (SWITCH["b"], orthanc.dicom_port)}
        for k in ("a", "b"):
            db_url = f"postgresql+psycopg://agent@{SWITCH[k]}:{pg.port}/agent"
            env = node_env(
                tmp_path / f"node-{k}",
                f"node-{k}",
                f"NODE{k.upper()}",
                ports[k],
                db_url,
                pacs[k],
                orthanc.aet,
            )
            nodes[k] = Node(tmp_path / f"node-{k}", hosts[k], env)
        nodes["a"].start()  # A first: it creates the schema
        nodes["b"].start()
        for k in ("a", "b"):
            orthanc.put(
                f"/modalities/node{k}",
                {"AET": f"NODE{k.upper()}", "Host": HOST[k], "Port": ports[k], "AllowEcho": True,
                 "AllowFind": True, "AllowMove": True, "AllowGet": True, "AllowStore": True},
            )  # fmt: skip

        # Studies routed to both nodes: each processed once, by the node that received it.
        routed: dict[str, list[str]] = {"a": [], "b": []}
        t0 = time.monotonic()
        for i, k in enumerate(["a", "b", "a", "b"]):
            files, study_uid = study_files(tmp_path, f"TWO{i}", date(2024, 1, 10 + i))
            ids = [orthanc.upload(f)["ID"] for f in files]
            orthanc.send_to(f"node{k}", ids)
            routed[k].append(study_uid)
        everything = routed["a"] + routed["b"]
        assert wait_until(lambda: all(len(ours(orthanc, s)) == 2 for s in everything), 90), (
            nodes["a"].log_text()[-3000:] + nodes["b"].log_text()[-3000:]
        )
        shared_s = time.monotonic() - t0

        # A study routed to A while A's link to the PACS hangs: A claims the job, stalls in the priors
        # search, and is killed there.
        relay.stall()
        files, victim = study_files(tmp_path, "TWOKILL", date(2024, 2, 1))
        orthanc.send_to("nodea", [orthanc.upload(f)["ID"] for f in files])
        assert wait_until(lambda: len(relay.held) >= 1, 60), nodes["a"].log_text()[-3000:]
        assert any(
            e.get("kind") == "process_study" for e in nodes["a"].events("job.claimed")[len(routed["a"]) :]
        )
        nodes["a"].kill()
        killed_at = time.monotonic()
        assert wait_until(lambda: len(ours(orthanc, victim)) == 2, 90), nodes["b"].log_text()[-4000:]
        takeover_s = time.monotonic() - killed_at

        with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=agent dbname=agent") as db:
            rows = db.execute(
                "SELECT s.study_uid, s.node, j.state, j.attempts, "
                "(SELECT count(*) FROM output_versions o WHERE o.study_pk = s.id) "
                "FROM studies s JOIN jobs j ON j.study_pk = s.id WHERE j.kind = 'process_study'"
            ).fetchall()
            outbox = db.execute("SELECT state, attempts FROM outbox").fetchall()
        by_study = {r[0]: r[1:] for r in rows}
        for k in ("a", "b"):
            for study_uid in routed[k]:
                assert by_study[study_uid] == (f"node-{k}", "done", 1, 1)
        assert by_study[victim] == ("node-b", "done", 2, 1)  # A's claim, then B's
        # Every result reached Orthanc once: one SR and one PDF per study, each row sent on its first try.
        for study_uid in [*everything, victim]:
            assert ours(orthanc, study_uid) == sorted([PDF_CLASS, SR_CLASS])
        assert len(outbox) == 2 * 5 and set(outbox) == {("delivered", 1)}
        took_over = nodes["b"].events("node.took_over")
        assert [e["previous"] for e in took_over] == ["node-a"]
        fetched = nodes["b"].events("node.fetched")
        assert fetched and fetched[-1]["completed"] == 2  # the CT and the SR came from the PACS
        print(
            f"\ntwo nodes: 4 studies routed to both processed once each in {shared_s:.1f} s; "
            f"node A killed mid-job, node B delivered the result {takeover_s:.1f} s later "
            f"(lease 3 s, dead after 3 s); 10 objects in Orthanc, 10 outbox rows delivered on attempt 1"
        )
    finally:
        for node in nodes.values():
            node.stop()
        relay.close()
        orthanc.stop()
        pg.stop()
