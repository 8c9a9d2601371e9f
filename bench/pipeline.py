"""Pipeline latency benchmark: from "study stable" to "result stored in Orthanc", with its parts.

Usage: ``.venv/bin/python bench/pipeline.py [--runs 10] [--priors 5] [--lesions 10] [--agent-env K=V ...]``

Orthanc (the test harness ``tests/support/orthanc.py``: own configuration, storage and free ports on
127.0.0.1, ``TCP_NODELAY=1``) holds, for each run, one patient's ``--priors`` earlier studies, each a CT
image and a measurement SR (TID 1500, written with highdicom as the Orthanc tests do) of ``--lesions``
liver lesions. A ``liver-agent serve`` subprocess (the test harness ``tests/support/agentproc.py``, pipeline
on, C-MOVE retrieval, Orthanc as query/retrieve peer and store destination) is told about Orthanc and
Orthanc about it. Each run makes Orthanc send the patient's follow-up CT and its measurement SR to the agent
(``POST /modalities/agent/store``, as an auto-routing rule would); the agent finds the priors (C-FIND),
retrieves their SRs (C-MOVE to itself), reads and tracks them, assesses, writes the response SR and the PDF
summary, and C-STOREs both to Orthanc. Every run uses a new patient, so every run retrieves its priors.

Measured per run, all from the agent's own records (its database and its JSON log, same clock):
- ``total``: ``studies.stable_at`` of the follow-up to the last ``outbox.delivered_at`` of its results (the
  C-STORE success answer: Orthanc has stored them);
- its parts: ``wait`` (stable to the worker claiming the job), ``classify``, ``find``, ``retrieve``,
  ``read``, ``assess``, ``write`` (SR + PDF, saved and fsynced), ``queue`` (output version, alerts and
  outbox rows in one transaction) from the ``pipeline.finished`` event, ``handoff`` (job finished to the
  delivery starting) and ``deliver`` (the C-STORE association, from ``outbox.delivered``).

Output: one line per run, then the median of each part, and last ``median_s=<median total>``.

Network namespace: Orthanc binds every interface, so as root the script re-executes itself inside
``unshare --net`` with only loopback up. Set ``PIPELINE_BENCH_NO_NETNS=1`` to skip that.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NETNS_MARK = "PIPELINE_BENCH_IN_NETNS"
PARTS = ("wait", "classify", "find", "retrieve", "read", "assess", "write", "queue", "handoff", "deliver")


def reexec_in_netns() -> None:
    if os.environ.get(NETNS_MARK) or os.environ.get("PIPELINE_BENCH_NO_NETNS") or os.geteuid() != 0:
        return
    if not shutil.which("unshare") or not shutil.which("ip"):
        return
    env = {**os.environ, NETNS_MARK: "1", "TCP_NODELAY": "1"}
    args = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    os.execvpe(
        "unshare", ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *args], env
    )


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _db_time(value: str) -> datetime:
    from datetime import UTC

    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def size(timepoint: int, lesion: int) -> float:
    """Long axis (mm): lesions of different sizes, half shrinking and half growing a little per study."""
    return 12.0 + 3 * lesion + timepoint * (-1) ** lesion


def make_patient(directory: Path, k: int, priors: int, lesions: int) -> tuple[list[Path], list[Path], str]:
    """Files of the priors (CT + SR each) and of the follow-up (CT + SR); the follow-up Study UID."""
    from tests.unit.sr.srgen import LesionSpec, ct_image, uid, write_study_sr

    pid = f"BENCH{k:03d}"
    first = date(2023, 1, 10)
    prior_files: list[Path] = []
    follow_up: list[Path] = []
    follow_uid = ""
    for i in range(priors + 1):
        day = first + timedelta(days=56 * i)
        study = f"{pid}-s{i}"
        ct = ct_image(pid, study, day)
        ct.StudyDescription = "CT ABDOMEN LIVER FOLLOW-UP"
        ct.BodyPartExamined = "ABDOMEN"
        ct_path = directory / f"{study}-ct.dcm"
        ct.save_as(ct_path, enforce_file_format=True)
        specs = [
            LesionSpec(
                f"liver lesion {j + 1}", uid(pid, "lesion", str(j)), long_mm=12.0 + 3 * j + i * (-1) ** j
            )
            for j in range(lesions)
        ]
        sr_path, _ = write_study_sr(
            directory, study, patient_id=pid, study=study, study_date=day, lesions=specs
        )
        if i < priors:
            prior_files += [ct_path, sr_path]
        else:
            follow_up = [ct_path, sr_path]
            follow_uid = uid(study)
    return prior_files, follow_up, follow_uid


def run_once(orthanc, agent, follow_up: list[Path], study_uid: str, timeout: float) -> dict[str, float]:
    from support.orthanc import wait_until

    ids = [orthanc.upload(p)["ID"] for p in follow_up]
    orthanc.send_to("agent", ids)

    def delivered() -> bool:
        rows = agent.query(
            "SELECT o.state FROM outbox o JOIN studies s ON s.id = o.study_pk WHERE s.study_uid = :u",
            u=study_uid,
        )
        return len(rows) >= 2 and all(r[0] == "delivered" for r in rows)

    if not wait_until(delivered, timeout, 0.05):
        raise RuntimeError(f"no result in Orthanc after {timeout} s:\n{agent.log_text()[-3000:]}")
    # Wait for the jobs of the retrieved priors (SR-only studies, ignored) so runs do not overlap.
    wait_until(
        lambda: agent.scalar("SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')") == 0, 30
    )
    ((study_pk, stable_at),) = agent.query(
        "SELECT id, stable_at FROM studies WHERE study_uid = :u", u=study_uid
    )
    job_ids = {r[0] for r in agent.query("SELECT id FROM jobs WHERE study_pk = :p", p=study_pk)}
    items = agent.query(
        "SELECT id, delivered_at FROM outbox WHERE study_pk = :p AND state = 'delivered'", p=study_pk
    )
    item_ids = {r[0] for r in items}
    last_delivered = max(_db_time(r[1]) for r in items)
    stable = _db_time(stable_at)
    events = agent.events()
    claimed = [e for e in events if e.get("event") == "job.claimed" and e.get("job") in job_ids]
    finished = [e for e in events if e.get("event") == "pipeline.finished" and e.get("job") in job_ids]
    sent = [e for e in events if e.get("event") == "outbox.delivered" and e.get("item") in item_ids]
    fin = finished[-1]
    parts = {
        "total": (last_delivered - stable).total_seconds(),
        "wait": (_ts(claimed[-1]["timestamp"]) - stable).total_seconds(),
    }
    for name in ("classify", "find", "retrieve", "read", "assess", "write", "queue"):
        parts[name] = float(fin.get(f"{name}_ms", 0.0)) / 1000
    deliver = max(float(e["ms"]) for e in sent) / 1000
    parts["deliver"] = deliver
    parts["handoff"] = (last_delivered - _ts(fin["timestamp"])).total_seconds() - deliver
    parts["pipeline"] = float(fin["ms"]) / 1000
    return parts


def fmt(parts: dict[str, float]) -> str:
    shown = ["total", *PARTS]
    return "  ".join(f"{k}={parts[k] * 1000:.0f}ms" for k in shown if k in parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="follow-up studies timed (one patient each)")
    parser.add_argument("--priors", type=int, default=5, help="prior studies (CT + SR) per patient")
    parser.add_argument("--lesions", type=int, default=10, help="lesions in every SR")
    parser.add_argument(
        "--agent-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment of the agent"
    )
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for one result")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    reexec_in_netns()
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from support.agentproc import Agent, free_port
    from support.orthanc import ORTHANC, Orthanc

    if not Path(ORTHANC).exists():
        print("Orthanc not found: run scripts/install-system-deps.sh", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    orthanc = Orthanc(work / "orthanc", free_port(), free_port())
    agent = Agent(work / "agent", free_port())
    agent.workdir.mkdir(parents=True)
    data = work / "data"
    data.mkdir()
    try:
        t0 = time.perf_counter()
        patients = [make_patient(data, k, args.priors, args.lesions) for k in range(args.runs)]
        print(
            f"data: {args.runs} patients x {args.priors} priors x {args.lesions} lesions "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        orthanc.start()
        for priors, _, _ in patients:
            for path in priors:
                orthanc.upload(path)
        peers = {
            "pacs": {
                "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port,
                "retrieve_method": "move", "acse_timeout_s": 5, "dimse_timeout_s": 30,
                "network_timeout_s": 30,
            }
        }  # fmt: skip
        agent.env_overrides.update(
            {
                "LIVER_AGENT_PEERS": json.dumps(peers),
                "LIVER_AGENT_PIPELINE__ENABLED": "true",
                "LIVER_AGENT_PIPELINE__RESULTS_DIR": str(agent.workdir / "results"),
                "LIVER_AGENT_STABILITY__STABLE_AFTER_S": "1",
                "LIVER_AGENT_STABILITY__CHECK_INTERVAL_S": "0.25",
                "TCP_NODELAY": "1",
            }
        )
        agent.env_overrides.update(dict(kv.split("=", 1) for kv in args.agent_env))
        agent.start()
        orthanc.register_agent(agent.port)
        results = []
        for k, (_, follow_up, study_uid) in enumerate(patients):
            parts = run_once(orthanc, agent, follow_up, study_uid, args.timeout)
            results.append(parts)
            print(f"run {k + 1:2d}: {fmt(parts)}", flush=True)
        medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(f"median: {fmt(medians)}")
        print(f"median pipeline (claim to queued): {medians['pipeline'] * 1000:.0f}ms")
        print(f"median_s={medians['total']:.3f}")
        return 0
    finally:
        agent.kill()
        orthanc.stop()
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
