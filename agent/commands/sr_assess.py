"""``liver-agent sr assess``: SR files -> response SR (+ PDF summary) as DICOM.

The offline path of the pipeline: it calls the same assembly as the service's worker
(``agent.pipeline.assemble``: read -> link -> assess -> report) and the same writer, so the service and the
command give the same SR for the same inputs. ``--images`` gives the headers of the measured images (slice
thickness, contrast), as the service's index does. Our own SRs are recognised by Manufacturer: they never
stand in for a radiologist's SR of the same study, and ours for the newest study are listed as predecessors
of the new version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.commands.sr_options import sr_settings, timeline_context
from agent.markers.csvimport import MarkerImportError, read_csv
from agent.pipeline.assemble import (
    NoEarlierStudy,
    TrackingError,
    assemble,
    read_reports,
    render,
    set_aside_ours,
    timeline_options,
)
from agent.pipeline.classify import files_lookup
from agent.response.model import MarkerResult
from agent.response.parse import ValidationError, assessment_to_dict
from agent.sr.read import PRE_READ_REASON, SRReport, read_sr


def _fail(message: str) -> int:
    print(f"liver-agent sr assess: {message}", file=sys.stderr)
    return 2


def assess_files(args: argparse.Namespace) -> int:
    try:
        context = timeline_context(args)
    except ValidationError as exc:
        return _fail(str(exc))
    rules, limits, distance = sr_settings(args)
    from agent.commands import settings_or_exit

    settings = settings_or_exit(getattr(args, "config", None))
    org_root = settings.uids.org_root
    try:
        lookup = files_lookup(args.images) if getattr(args, "images", None) else None
    except ValueError as exc:
        return _fail(str(exc))
    usable, failures, _ = read_reports(args.files, lookup=lookup, rules=rules, limits=limits)
    pre_reads: list[SRReport] = []
    for path, reason in list(failures.items()):
        if reason == PRE_READ_REASON:  # an earlier pre-read of ours: superseded, never an input
            pre_reads.append(read_sr(path, limits=limits))
            del failures[path]
            print(f"{path}: {reason}; set aside", file=sys.stderr)
    for path, reason in failures.items():
        print(f"{path}: {reason}", file=sys.stderr)
    if failures:
        return _fail(f"{len(failures)} file(s) cannot be used; nothing written")
    inputs, ours = set_aside_ours(usable)
    markers: list[MarkerResult] = []
    if getattr(args, "markers", None):
        patients = {i.report.patient_id for i in inputs}
        try:
            with open(args.markers, encoding="utf-8-sig", newline="") as fh:
                markers = [m.result for m in read_csv(fh) if m.patient_id in patients]
        except (OSError, UnicodeDecodeError, MarkerImportError) as exc:
            return _fail(f"{args.markers}: {exc}")
    try:
        assembly = assemble(
            inputs,
            context,
            link_distance_mm=distance,
            options=timeline_options(settings.sr),
            pre_read=args.pre_read,
            ours=[o.report for o in ours] + pre_reads,
            markers=markers,
        )
    except TrackingError as exc:
        return _fail(str(exc))
    except NoEarlierStudy:
        return _fail("--pre-read needs at least one earlier study besides the newest one")
    try:
        sr, pdf = render(assembly, org_root)
        out = Path(args.out)
        sr.save_as(out, enforce_file_format=True)
        if args.summary:
            pdf.save_as(Path(args.summary), enforce_file_format=True)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(assessment_to_dict(assembly.assessment), indent=2))
    else:
        print(f"wrote {out}" + (f" and {args.summary}" if args.summary else ""), file=sys.stderr)
    return 0
