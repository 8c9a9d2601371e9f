"""Pipeline latency benchmark: from "study stable" to "result stored in Orthanc", with its parts.

Usage: ``.venv/bin/python bench/pipeline.py [--runs 10] [--priors 5] [--lesions 10] [--agent-env K=V ...]``

Orthanc (the test harness ``tests/support/orthanc.py``: own configuration, storage and free ports on
127.0.0.1, ``TCP_NODELAY=1``) holds, for each run, one patient's ``--priors`` earlier studies, each a
portal-venous CT series (one 160 x 160 slice per lesion, plus two unmeasured slices) and a viewer's
measurement SR (``tests/support/choigen.py``: long and short axis lines on the slices) of ``--lesions``
liver lesions, diameters only unless ``--with-hu``: so every prior image's acquisition context is asked of
the PACS, and (diameters only) each measured prior slice is retrieved and its mean HU measured. A
``liver-agent serve`` subprocess (the test harness ``tests/support/agentproc.py``, pipeline
on, C-MOVE retrieval, Orthanc as query/retrieve peer and store destination) is told about Orthanc and
Orthanc about it. Each run makes Orthanc send the patient's follow-up CT and its measurement SR to the agent
(``POST /modalities/agent/store``, as an auto-routing rule would); the agent finds the priors (C-FIND),
retrieves their SRs (C-MOVE to itself), reads and tracks them, assesses, writes the response SR and the PDF
summary, and C-STOREs both to Orthanc. Every run uses a new patient, so every run retrieves its priors.

Measured per run, all from the agent's own records (its database and its JSON log, same clock):
- ``total``: ``studies.stable_at`` of the follow-up to the last ``outbox.delivered_at`` of its results (the
  C-STORE success answer: Orthanc has stored them);
- its parts: ``wait`` (stable to the worker claiming the job), ``classify``, ``find``, ``retrieve``,
  ``ctx`` (the measured images' acquisition context, of which ``ctx_read``: parsing the SRs, done once for
  the whole run since the reader's cache keeps them, ``ctx_query``: C-FIND of their series and
  instances, ``ctx_retrieve``: C-MOVE of the measured prior slices), ``read`` (of which ``pixels``:
  decoding and measuring the mean HU), ``assess``,
  ``write`` (SR + PDF, saved and fsynced), ``queue`` (output version, alerts and outbox rows in one
  transaction) from the ``pipeline.finished`` event, ``handoff`` (job finished to the
  delivery starting) and ``deliver`` (the C-STORE association, from ``outbox.delivered``).

Output: one line per run, then the median of each part, and last ``median_s=<median total>``.

``--sr-arrival``: the figure "SR arrival -> response SR stored in the PACS" with the agent's default
stability settings (``stability.sr_quiet_s`` 5 s, ``check_interval_s`` 5 s, image quiet time 60 s). Each
patient's follow-up CT is routed to the agent first and assessed (a pre-read); then, one patient at a time,
the radiologist's measurement SR reaches Orthanc and is routed to the agent alone. Measured per run from the
agent's database: the SR's ``instances.received_at`` to the last ``outbox.delivered_at`` of the results made
after it. Output: one line per run and last ``sr_median_s=<median>``.

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
PARTS = (
    "wait",
    "classify",
    "find",
    "retrieve",
    "ctx",
    "ctx_read",
    "ctx_query",
    "ctx_retrieve",
    "read",
    "pixels",
    "assess",
    "write",
    "queue",
    "handoff",
    "deliver",
)


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


def make_patient(
    directory: Path, k: int, priors: int, lesions: int, with_hu: bool
) -> tuple[list[Path], list[Path], str]:
    """Files of the priors (CT series + SR each) and of the follow-up; the follow-up Study UID."""
    from support.choigen import Lesion, Visit, write_visit

    pid = f"BENCH{k:03d}"
    first = date(2023, 1, 10)
    prior_files: list[Path] = []
    follow_up: list[Path] = []
    follow_uid = ""
    for i in range(priors + 1):
        # Lesions of different sizes, half shrinking and half growing a little per study, getting darker.
        found = tuple(
            Lesion(f"liver lesion {j + 1}", f"L{j}", long_mm, round(long_mm * 0.7, 1), 60 - 2 * i)
            for j in range(lesions)
            for long_mm in [12.0 + 3 * j + i * (-1) ** j]
        )
        visit = Visit(pid, f"s{i}", first + timedelta(days=56 * i), "ABD PV 2.5mm", found)
        images, sr = write_visit(directory / visit.name / pid, visit, with_hu)
        if i < priors:
            prior_files += [*images, sr]
        else:
            follow_up = [*images, sr]
            follow_uid = visit.study_uid
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
    for name in ("classify", "find", "retrieve", "read", "pixels", "assess", "write", "queue"):
        parts[name] = float(fin.get(f"{name}_ms", 0.0)) / 1000
    parts["ctx"] = float(fin.get("context_ms", 0.0)) / 1000
    parts["ctx_read"] = float(fin.get("context_read_ms", 0.0)) / 1000
    parts["ctx_query"] = float(fin.get("context_query_ms", 0.0)) / 1000
    parts["ctx_retrieve"] = float(fin.get("context_retrieve_ms", 0.0)) / 1000
    deliver = max(float(e["ms"]) for e in sent) / 1000
    parts["deliver"] = deliver
    parts["handoff"] = (last_delivered - _ts(fin["timestamp"])).total_seconds() - deliver
    parts["pipeline"] = float(fin["ms"]) / 1000
    return parts


def run_sr_arrival(orthanc, agent, patients, timeout: float) -> list[float]:
    """The follow-up CTs first (pre-reads, image quiet time), then each SR alone: SR arrival to stored."""
    from support.orthanc import wait_until

    def delivered_after(study_uid: str, after: str | None) -> list[str]:
        rows = agent.query(
            "SELECT o.state, o.delivered_at FROM outbox o JOIN studies s ON s.id = o.study_pk "
            "WHERE s.study_uid = :u AND (:a IS NULL OR o.created_at > :a)",
            u=study_uid,
            a=after,
        )
        return [r[1] for r in rows if r[0] == "delivered"] if len(rows) >= 2 else []

    for _, follow_up, _ in patients:
        orthanc.send_to("agent", [orthanc.upload(p)["ID"] for p in follow_up[:-1]])
    for _, _, study_uid in patients:
        if not wait_until(lambda u=study_uid: len(delivered_after(u, None)) >= 2, timeout + 120, 0.2):
            raise RuntimeError(f"no pre-read in Orthanc:\n{agent.log_text()[-3000:]}")
    out: list[float] = []
    for _, follow_up, study_uid in patients:
        sr = follow_up[-1]
        sop = pydicom_sop(sr)
        orthanc.send_to("agent", [orthanc.upload(sr)["ID"]])
        wait_until(
            lambda s=sop: agent.scalar("SELECT count(*) FROM instances WHERE sop_uid = :s", s=s) == 1, 30
        )
        received = agent.scalar("SELECT received_at FROM instances WHERE sop_uid = :s", s=sop)
        if not wait_until(lambda u=study_uid, r=received: len(delivered_after(u, r)) >= 2, timeout, 0.05):
            raise RuntimeError(f"no response to the SR after {timeout} s:\n{agent.log_text()[-3000:]}")
        last = max(_db_time(t) for t in delivered_after(study_uid, received))
        out.append((last - _db_time(received)).total_seconds())
        print(f"run {len(out):2d}: sr_arrival_to_stored={out[-1] * 1000:.0f}ms", flush=True)
    return out


def pydicom_sop(path: Path) -> str:
    import pydicom

    return str(
        pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
    )


def fmt(parts: dict[str, float]) -> str:
    shown = ["total", *PARTS]
    return "  ".join(f"{k}={parts[k] * 1000:.0f}ms" for k in shown if k in parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="follow-up studies timed (one patient each)")
    parser.add_argument("--priors", type=int, default=5, help="prior studies (CT + SR) per patient")
    parser.add_argument("--lesions", type=int, default=10, help="lesions in every SR")
    parser.add_argument("--with-hu", action="store_true", help="SRs carry the mean HU (no pixel reads)")
    parser.add_argument(
        "--agent-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment of the agent"
    )
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for one result")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--sr-arrival",
        action="store_true",
        help="time SR arrival -> response SR stored, with the default stability settings",
    )
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
        patients = [make_patient(data, k, args.priors, args.lesions, args.with_hu) for k in range(args.runs)]
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
                "TCP_NODELAY": "1",
            }
        )
        if args.sr_arrival:  # the agent's defaults, not the test harness's short times
            from agent.config import StabilitySettings

            defaults = StabilitySettings()
            for key in ("stable_after_s", "sr_quiet_s", "check_interval_s", "max_wait_s"):
                agent.env_overrides[f"LIVER_AGENT_STABILITY__{key.upper()}"] = str(getattr(defaults, key))
        else:
            agent.env_overrides["LIVER_AGENT_STABILITY__STABLE_AFTER_S"] = "1"
            agent.env_overrides["LIVER_AGENT_STABILITY__CHECK_INTERVAL_S"] = "0.25"
        agent.env_overrides.update(dict(kv.split("=", 1) for kv in args.agent_env))
        agent.start()
        orthanc.register_agent(agent.port)
        if args.sr_arrival:
            times = run_sr_arrival(orthanc, agent, patients, args.timeout)
            print(f"sr_median_s={statistics.median(times):.3f}")
            return 0
        results = []
        for k, (_, follow_up, study_uid) in enumerate(patients):
            parts = run_once(orthanc, agent, follow_up, study_uid, args.timeout)
            results.append(parts)
            print(f"run {k + 1:2d}: {fmt(parts)}", flush=True)
        medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(f"median: {fmt(medians)}")
        print(f"median pipeline (claim to queued): {medians['pipeline'] * 1000:.0f}ms")
        extra = medians["ctx"] - medians["ctx_read"] + medians["pixels"]
        ms = {k: round(medians[k] * 1000) for k in ("ctx_query", "ctx_retrieve", "pixels")}
        print(
            f"median extra time of the acquisition context and pixel reads: {extra * 1000:.0f}ms "
            f"(query {ms['ctx_query']}, retrieval {ms['ctx_retrieve']}, pixel reads {ms['pixels']})"
        )
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
