"""Options shared by the ``liver-agent sr`` sub-commands: the patient context of a timeline built from SRs,
and the reader settings of the configuration's ``sr:`` section."""

from __future__ import annotations

import argparse
from datetime import date
from typing import TYPE_CHECKING

from agent.response.model import Context, Criterion
from agent.response.parse import ValidationError, criterion_from_name

if TYPE_CHECKING:
    from agent.sr.context import PhaseRule
    from agent.sr.read import Limits


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


def sr_settings(args: argparse.Namespace) -> tuple[list[PhaseRule], Limits, float | None]:
    """Phase rules, reader limits and linking distance from the configuration (``sr:`` section)."""
    from agent.commands import settings_or_exit
    from agent.pipeline.assemble import reader_settings

    settings = settings_or_exit(getattr(args, "config", None))
    sr = getattr(settings, "sr", None)
    rules, limits = reader_settings(sr)
    distance = getattr(args, "link_distance_mm", None)
    if distance is None:
        distance = getattr(sr, "link_distance_mm", None)
    return rules, limits, distance
