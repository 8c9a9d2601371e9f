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
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from agent.pipeline.tracking import ReportInput, TrackingError, build_timeline, timeline_to_dict
from agent.response.model import Context, Criterion, Phase
from agent.response.parse import ValidationError, criterion_from_name
from agent.sr.context import DEFAULT_PHASE_RULES, PhaseRule, SeriesLookup, study_context
from agent.sr.observations import observations
from agent.sr.read import Limits, SRReadError, read_sr, require_measurements


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("sr", parents=parents, help="read DICOM SR measurement reports")
    sub = p.add_subparsers(dest="sr_command", metavar="SUBCOMMAND")
    for add in SUBCOMMANDS:
        add(sub, parents)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def add_timeline_arguments(p: argparse.ArgumentParser) -> None:
    """Options describing the patient context of a timeline built from SRs (shared by sr sub-commands)."""
    p.add_argument("--treatment-start", metavar="YYYY-MM-DD", help="treatment start date")
    p.add_argument("--primary", default="unknown", help="primary tumour, e.g. CRC, GIST, HCC")
    p.add_argument("--therapy", default="", help="comma-separated agents or classes")
    p.add_argument("--criteria", default="RECIST1.1", help="comma-separated criteria (default RECIST1.1)")
    p.add_argument(
        "--link-distance-mm",
        type=float,
        help="also link lesions by organ and 3D position within this distance (default: sr.link_distance_mm)",
    )


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
        "--pre-read",
        action="store_true",
        help="pre-read for the newest study: its measurements are not used; priors and thresholds only",
    )
    add_timeline_arguments(p)
    p.set_defaults(func=run_assess)


SUBCOMMANDS: list[Callable[[Any, list[argparse.ArgumentParser]], None]] = [_add_dump, _add_assess]


# --------------------------------------------------------------------------------------------------------


def timeline_context(args: argparse.Namespace) -> Context:
    """The Context from the command-line options; raises ValidationError naming the option."""
    start = None
    if args.treatment_start:
        try:
            start = date.fromisoformat(args.treatment_start)
        except ValueError:
            raise ValidationError("--treatment-start", "must be a date YYYY-MM-DD") from None
    criteria: tuple[Criterion, ...] = tuple(
        dict.fromkeys(criterion_from_name(c, "--criteria") for c in args.criteria.split(",") if c.strip())
    ) or (Criterion.RECIST,)
    therapy = tuple(t.strip() for t in args.therapy.split(",") if t.strip())
    return Context(treatment_start=start, primary=args.primary, therapy=therapy, criteria=criteria)


def read_reports(
    files: Sequence[str],
    *,
    lookup: SeriesLookup | None = None,
    rules: Sequence[PhaseRule] = DEFAULT_PHASE_RULES,
    limits: Limits | None = None,
) -> tuple[list[ReportInput], dict[str, str], dict[str, list[str]]]:
    """(usable reports, reason per unusable file, warnings per file)."""
    usable: list[ReportInput] = []
    failures: dict[str, str] = {}
    file_warnings: dict[str, list[str]] = {}
    for path in files:
        try:
            report = require_measurements(read_sr(path, limits=limits))
        except SRReadError as exc:
            failures[path] = exc.reason
            continue
        ctx = study_context(report, lookup, rules)
        obs, obs_warnings = observations(report, lookup, rules)
        warns = list(report.warnings) + list(ctx.warnings) + obs_warnings
        warns += [f"{g.label}: {w}" for g in report.groups for w in g.warnings]
        file_warnings[path] = list(dict.fromkeys(warns))
        usable.append(ReportInput(report, ctx, tuple(obs), tuple(warns)))
    return usable, failures, file_warnings


def sr_settings(args: argparse.Namespace) -> tuple[list[PhaseRule], Limits, float | None]:
    """Phase rules, reader limits and linking distance from the configuration (``sr:`` section)."""
    from agent.commands import settings_or_exit

    settings = settings_or_exit(getattr(args, "config", None))
    sr = getattr(settings, "sr", None)
    if sr is None:
        return list(DEFAULT_PHASE_RULES), Limits(), None
    rules = [PhaseRule(r.pattern, Phase(r.phase)) for r in sr.phase_rules] or list(DEFAULT_PHASE_RULES)
    limits = Limits(
        max_depth=sr.max_depth, max_items=sr.max_items, max_file_bytes=int(sr.max_file_mb * 1024 * 1024)
    )
    return rules, limits, sr.link_distance_mm


def run_dump(args: argparse.Namespace) -> int:
    try:
        context = timeline_context(args)
    except ValidationError as exc:
        print(f"liver-agent sr dump: {exc}", file=sys.stderr)
        return 2
    rules, limits, distance = sr_settings(args)
    if args.link_distance_mm is not None:
        distance = args.link_distance_mm
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
