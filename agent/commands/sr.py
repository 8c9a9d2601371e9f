"""``liver-agent sr ...``: offline work on DICOM SR files.

* ``sr dump FILE.dcm...`` reads lesion measurements from SR files (any writer), links each lesion across
  studies and prints the timeline JSON (DESIGN.md; the input of ``liver-agent assess``), one time point per
  study, with a ``source`` block per lesion and the ``warnings`` of each file. A file it cannot use gets a
  one-line reason on stderr and exit status 2; the other files are still read.

* ``sr assess SR.dcm... --out RESPONSE.dcm [--summary SUMMARY.dcm] [--json] [--pre-read]`` builds the same
  timeline, assesses it (``agent.response.table.assess_timeline``) and writes the response SR and the PDF
  summary (``agent.sr.write``) into the newest study; ``--json`` prints the Assessment JSON of
  ``liver-agent assess``. Our own earlier SRs of the newest study become its predecessors.

Further sub-commands register themselves in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from agent.commands.sr_options import add_timeline_arguments, sr_settings, timeline_context
from agent.pipeline.assemble import read_reports
from agent.pipeline.tracking import TrackingError, build_timeline, timeline_to_dict
from agent.response.parse import ValidationError


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("sr", parents=parents, help="read DICOM SR measurement reports")
    sub = p.add_subparsers(dest="sr_command", metavar="SUBCOMMAND")
    for add in SUBCOMMANDS:
        add(sub, parents)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _add_dump(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dump",
        parents=parents,
        help="print the lesion timeline read from SR files as JSON",
        description="Read TID 1500 (and look-alike) SR files; print the timeline JSON.",
    )
    p.add_argument("files", nargs="+", metavar="FILE.dcm", help="SR files (any order)")
    add_timeline_arguments(p)
    p.set_defaults(func=run_dump)


def _add_assess(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "assess",
        parents=parents,
        help="assess SR files and write the response SR (and a PDF summary) back as DICOM",
        description=(
            "Read TID 1500 SR files, order them by study date, assess the response and write the response SR "
            "(Comprehensive SR, TID 1500) into the newest study; optionally an Encapsulated PDF summary."
        ),
    )
    p.add_argument("files", nargs="+", metavar="SR.dcm", help="SR files (any order)")
    p.add_argument("--out", required=True, metavar="RESPONSE.dcm", help="the response SR to write")
    p.add_argument("--summary", metavar="SUMMARY.dcm", help="also write the Encapsulated PDF summary")
    p.add_argument("--json", action="store_true", help="print the Assessment JSON (as liver-agent assess)")
    p.add_argument(
        "--images",
        nargs="+",
        metavar="IMAGE.dcm",
        help="image files of the measured series: their headers give slice thickness and contrast, as the "
        "service's index does",
    )
    p.add_argument(
        "--pre-read",
        action="store_true",
        help="pre-read for the newest study: its measurements are not used; priors and thresholds only",
    )
    p.add_argument(
        "--markers",
        metavar="MARKERS.csv",
        help="tumour marker results (the columns of 'liver-agent markers import'); the rows of the SRs' "
        "patient ID are added to the timeline",
    )
    add_timeline_arguments(p)
    p.set_defaults(func=run_assess)


SUBCOMMANDS: list[Callable[[Any, list[argparse.ArgumentParser]], None]] = [_add_dump, _add_assess]


# --------------------------------------------------------------------------------------------------------


def run_dump(args: argparse.Namespace) -> int:
    try:
        context = timeline_context(args)
    except ValidationError as exc:
        print(f"liver-agent sr dump: {exc}", file=sys.stderr)
        return 2
    rules, limits, distance = sr_settings(args)
    usable, failures, file_warnings = read_reports(args.files, rules=rules, limits=limits)
    for path, reason in failures.items():
        print(f"{path}: {reason}", file=sys.stderr)
    if not usable:
        return 2
    try:
        tracked = build_timeline(usable, context, link_distance_mm=distance)
    except TrackingError as exc:
        print(f"liver-agent sr dump: {exc}", file=sys.stderr)
        return 2
    data = timeline_to_dict(tracked, file_warnings)
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 2 if failures else 0


# --------------------------------------------------------------------------------------------------------
# sr assess


def run_assess(args: argparse.Namespace) -> int:
    from agent.commands.sr_assess import assess_files

    return assess_files(args)
