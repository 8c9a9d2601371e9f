"""``liver-agent assess TIMELINE.json|- [--criteria ...] [--format json|table]``: response of a timeline.

Reads a measurement timeline (the shape of a ``tests/data/criteria/vectors.json`` case), prints the Assessment
JSON (or a readable table) and exits 0; invalid input exits 2 with a message naming the field, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.response.model import Assessment, Category, Criterion, Timeline
from agent.response.parse import (
    ValidationError,
    assessment_to_dict,
    criterion_from_name,
    explanation,
    explanation_lines,
    marker_lines,
    markers_to_dict,
    site_lines,
    sites_to_dict,
    timeline_from_dict,
)
from agent.response.recist import target_value
from agent.response.registry import build_registry
from agent.response.table import assess_timeline


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "assess",
        parents=parents,
        help="compute the tumour response of a measurement timeline (JSON)",
        description="Compute RECIST 1.1, iRECIST, Choi, mChoi, mRECIST, EASL and Chun responses and alerts.",
    )
    p.add_argument("timeline", metavar="TIMELINE.json", help="timeline JSON file, or - for standard input")
    p.add_argument(
        "--criteria",
        help="comma-separated criteria (default: context.criteria), e.g. RECIST1.1,iRECIST,Choi",
    )
    p.add_argument("--format", choices=("json", "table"), default="json", help="output format (default json)")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"liver-agent assess: {message}", file=sys.stderr)
    return 2


def _read(source: str) -> object:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return json.loads(text, parse_float=Decimal)


def run(args: argparse.Namespace) -> int:
    try:
        data = _read(args.timeline)
    except OSError as exc:
        return _fail(f"cannot read {args.timeline}: {exc.strerror or exc}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _fail(f"{args.timeline}: invalid JSON: {exc}")
    try:
        timeline = timeline_from_dict(data)
        criteria: tuple[Criterion, ...] | None = None
        if args.criteria:
            names = [n for n in args.criteria.split(",") if n.strip()]
            criteria = tuple(criterion_from_name(n, f"--criteria[{i}]") for i, n in enumerate(names))
    except ValidationError as exc:
        return _fail(str(exc))
    assessment = assess_timeline(timeline, criteria)
    if args.format == "table":
        print_table(timeline, assessment)
    else:
        print(json.dumps(assessment_to_dict(assessment), indent=2))
    return 0


def _mm(value: Decimal | None) -> str:
    return "–" if value is None else f"{value.quantize(Decimal('0.1'))}"


def _pct(value: Decimal | None) -> str:
    return "–" if value is None else f"{value.quantize(Decimal('1')):+}%"


_STYLE = {
    Category.PD: "bold red",
    Category.ICPD: "bold red",
    Category.IUPD: "red",
    Category.PR: "green",
    Category.IPR: "green",
    Category.CR: "bold green",
    Category.ICR: "bold green",
    Category.OPTIMAL: "green",
    Category.NE: "yellow",
    Category.NA: "dim",
}


def _cat(category: Category | None, role: str = "baseline") -> str:
    if category is None:
        return role
    style = _STYLE.get(category)
    return f"[{style}]{category.value}[/]" if style else category.value


def print_table(timeline: Timeline, assessment: Assessment) -> None:
    """Lesions x time points, sums, % change and categories, why each criterion reached its latest category,
    then the alerts (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    registry = build_registry(timeline)
    table = Table(title=f"Tumour response — {timeline.context.primary}", show_lines=False)
    table.add_column("")
    for i, tp in enumerate(timeline.timepoints):
        table.add_column(f"{timeline.label(i)}\n{tp.date.isoformat()}\n{tp.modality or ''}", justify="right")
    for k, base in enumerate(registry.targets):
        label = f"T {base.id} ({base.organ}{', node SA' if base.is_node else ''})"
        table.add_row(label, *[_mm(target_value(recs[k])) for recs in registry.target_records])
    for k, base in enumerate(registry.non_targets):
        cells = []
        for recs in registry.non_target_records:
            rec = recs[k]
            cells.append("missing" if rec is None else rec.status.value.replace("_", " "))
        table.add_row(f"NT {base.id} ({base.organ})", *cells)
    new_cells = []
    for t in range(len(timeline.timepoints)):
        present = registry.new_present(t)
        new_cells.append(
            ", ".join(f"{n.id}{'?' if n.status.value == 'equivocal' else ''}" for n in present) or "–"
        )
    table.add_row("New lesions", *new_cells)
    recist = assessment.get(Criterion.RECIST)
    b = timeline.baseline_index
    if recist is not None:
        steps = recist.timepoints
        table.add_section()
        table.add_row(
            "Sum (mm)",
            *[
                _mm(recist.baseline_sum_mm if i == b else tp.sum_mm if tp else None)
                for i, tp in enumerate(steps)
            ],
        )
        table.add_row("vs baseline", *[_pct(tp.change_vs_baseline_pct if tp else None) for tp in steps])
        table.add_row("Nadir (mm)", *[_mm(tp.nadir_sum_mm if tp else None) for tp in steps])
        table.add_row("vs nadir", *[_pct(tp.change_vs_nadir_pct if tp else None) for tp in steps])
    table.add_section()
    for result in assessment.results:
        cells = [
            _cat(tp.category if tp else None, "history" if i < b else "baseline" if i == b else "")
            for i, tp in enumerate(result.timepoints)
        ]
        table.add_row(f"{result.criterion.value} (BOR {result.bor.value})", *cells)
    console.print(table)
    if recist is not None and recist.next_thresholds:
        parts = [
            f"{t.category.value} if the {t.quantity.replace('_mm', '').replace('_', ' ')} {t.comparison} "
            f"{_mm(t.value)} mm"
            for t in recist.next_thresholds
        ]
        console.print("Next read (RECIST 1.1): " + "; ".join(parts))
    for result in assessment.results:
        last = next((tp for tp in reversed(result.timepoints) if tp is not None), None)
        if last is None:
            continue
        console.print(
            f"[bold]{result.criterion.value}[/]: {last.category.value} at {timeline.label(last.index)}",
            highlight=False,
        )
        for line in explanation_lines(explanation(last, assessment, result.baseline_sum_mm)):
            console.print(f"  {line}", markup=False, highlight=False)
    last_index = len(timeline.timepoints) - 1
    context_lines: list[str] = []
    if last_index > timeline.baseline_index and assessment.sites:
        context_lines += [f"By site: {line}" for line in site_lines(sites_to_dict(assessment)[last_index])]
    markers = marker_lines(markers_to_dict(assessment), last_index)
    context_lines += [f"Tumour marker: {line}" for line in markers]
    for r in assessment.metabolic:
        fallback = f" {r.fallback}." if r.fallback else ""
        context_lines.append(f"PET {r.date}: {r.category.value} by {r.method} ({r.rule}).{fallback}")
    for line in context_lines:
        console.print(line, markup=False, highlight=False)
    if assessment.alerts:
        alerts = Table(title="Alerts")
        for col in ("time point", "severity", "code", "message"):
            alerts.add_column(col)
        for a in assessment.alerts:
            alerts.add_row(
                "–" if a.timepoint is None else str(a.timepoint), a.severity.value, a.code, a.message
            )
        console.print(alerts)
