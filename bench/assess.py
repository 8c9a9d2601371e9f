"""Throughput of the clinical core: generated patients (8 time points x 8 lesions) under all criteria.

A report, not a gate: there is no target (assessing one patient takes well under a millisecond).

Usage: python bench/assess.py [--patients 10000] [--seed 1] [--workers 1]
Prints the figures; the last line is ``patients_per_s=<value>``: ``assess_timeline`` (every criterion and the
alert rules) over timelines parsed beforehand, per wall-clock second (``cpu_patients_per_s`` counts CPU
seconds instead: the figure to compare runs on a loaded machine). Generating the input dicts is not timed;
parsing them (``timeline_from_dict``) and writing the Assessment JSON are timed and printed separately.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import random
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.response.model import Criterion, Timeline
from agent.response.parse import assessment_to_dict, timeline_from_dict
from agent.response.table import assess_timeline

ALL = tuple(Criterion)
ORGANS = ("liver", "liver", "lung", "lung", "lymph_node", "bone", "peritoneum", "liver")


def patient(rng: random.Random) -> dict[str, Any]:
    """One synthetic patient: 5 targets, 2 non-targets, and a new lesion appearing late in some series."""
    start = date(2024, 1, 15)
    primary, therapy = rng.choice(
        [
            ("CRC", ["FOLFOX", "bevacizumab"]),
            ("GIST", ["imatinib"]),
            ("HCC", ["atezolizumab", "bevacizumab"]),
            ("melanoma", ["pembrolizumab"]),
        ]
    )
    sizes = [rng.uniform(12, 60) for _ in range(5)]
    hu = [rng.uniform(40, 110) for _ in range(5)]
    trend = rng.uniform(-0.15, 0.12)
    new_at = rng.choice([None, None, 4, 6, 7])
    timepoints = []
    for t in range(8):
        lesions: list[dict[str, Any]] = []
        for i in range(5):
            size = max(0.0, sizes[i] * (1 + trend * t + rng.uniform(-0.05, 0.05)))
            is_node = ORGANS[i] == "lymph_node"
            lesions.append(
                {
                    "id": f"T{i}",
                    "organ": ORGANS[i],
                    "kind": "target",
                    "is_node": is_node,
                    "long_axis_mm": round(size * 1.3 if is_node else size, 1),
                    "short_axis_mm": round(max(size, 15.0) if is_node and t == 0 else size, 1)
                    if is_node
                    else None,
                    "mean_hu": round(hu[i] * (1 - 0.04 * t), 1),
                    "viable_long_axis_mm": round(size * 0.8, 1),
                    "viable_perp_axis_mm": round(size * 0.6, 1),
                    "chun_group": 3 if t == 0 else rng.choice([1, 2, 3]),
                }
            )
        lesions.append({"id": "NT1", "organ": ORGANS[5], "kind": "non-target", "status": "present"})
        lesions.append({"id": "NT2", "organ": ORGANS[6], "kind": "non-target", "status": "present"})
        if new_at is not None and t >= new_at:
            lesions.append(
                {"id": "N1", "organ": "liver", "kind": "new", "long_axis_mm": 11, "new_category": "target"}
            )
        timepoints.append(
            {
                "date": (start + timedelta(days=-7 + 56 * t)).isoformat(),
                "modality": "CT",
                "phase": "portal_venous",
                "slice_thickness_mm": 2.5,
                "contrast": True,
                "lesions": lesions,
            }
        )
    return {
        "context": {
            "treatment_start": start.isoformat(),
            "primary": primary,
            "therapy": therapy,
            "criteria": [c.value for c in ALL],
        },
        "timepoints": timepoints,
    }


def parsed_patients(seed: int, n: int) -> tuple[list[Timeline], float]:
    """``n`` generated patients parsed into timelines, and the seconds spent parsing (not generating) them."""
    rng = random.Random(seed)
    out: list[Timeline] = []
    parse_s = 0.0
    for _ in range(n):
        case = patient(rng)
        t0 = time.perf_counter()
        out.append(timeline_from_dict(case))
        parse_s += time.perf_counter() - t0
    return out, parse_s


def _assess_all(timelines: list[Timeline]) -> int:
    alerts = 0
    for tl in timelines:
        alerts += len(assess_timeline(tl, ALL).alerts)
    return alerts


def _serialise_s(timelines: list[Timeline]) -> float:
    """Seconds to write the Assessment JSON (``assessment_to_dict`` + ``json.dumps``) of ``timelines``."""
    assessments = [assess_timeline(tl, ALL) for tl in timelines]
    t0 = time.perf_counter()
    for assessment in assessments:
        json.dumps(assessment_to_dict(assessment))
    return time.perf_counter() - t0


def _worker(seed: int, n: int, barrier: Any, results: Any) -> None:
    series, parse_s = parsed_patients(seed, n)
    assess_timeline(series[0], ALL)  # import every criterion module before timing
    gc.collect()
    gc.freeze()  # the inputs are long-lived: keep the cyclic GC from re-scanning them during the run
    barrier.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    alerts = _assess_all(series)
    assess_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    sample = series[:SERIALISE_SAMPLE]
    results.put((n, alerts, parse_s, assess_s, len(sample), _serialise_s(sample), cpu_s))


SERIALISE_SAMPLE = 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes, each assessing its share (default 1: the per-process figure the issue asks for; "
        "more only adds idle cores, if any, on a shared machine)",
    )
    args = parser.parse_args()
    n, workers = args.patients, max(1, args.workers)
    print(
        f"patients={n} timepoints_per_patient=8 lesions_per_timepoint=8 criteria={len(ALL)} "
        f"workers={workers} cpus={os.cpu_count()} load_avg={_load()}"
    )
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    procs = [
        ctx.Process(target=_worker, args=(args.seed + i, share, barrier, results))
        for i, share in enumerate(shares)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    done = [results.get() for _ in procs]
    for p in procs:
        p.join()
    total = sum(d[0] for d in done)
    parse_s = sum(d[2] for d in done)
    assess_s = max(d[3] for d in done)  # the workers start together: the slowest one ends the run
    serialised, serialise_s = sum(d[4] for d in done), sum(d[5] for d in done)
    print(f"parse_patients_per_s={total / parse_s:.0f} (timeline_from_dict per process, generation excluded)")
    print(f"serialise_patients_per_s={serialised / serialise_s:.0f} (assessment_to_dict + json.dumps)")
    cpu_s = sum(d[6] for d in done)
    print(f"assess_s={assess_s:.2f} alerts={sum(d[1] for d in done)} load_avg={_load()}")
    print(f"cpu_patients_per_s={total / cpu_s:.0f} (per CPU-second of the workers: less sensitive to load)")
    print(f"patients_per_s={total / assess_s:.0f}")
    return 0


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
