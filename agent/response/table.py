"""Dispatcher: run the requested criteria on a timeline, then the alert rules, into one ``Assessment``.

Each criterion lives in its own module and exposes one pure function ``(Timeline) -> CriterionResult``
(see ``CRITERIA``). The alert rules (``agent.response.alerts.evaluate(timeline, results)``) run after all
criteria and never change a response (docs/criteria.md §9).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from functools import cache
from typing import cast

from agent.response.markers import assess as assess_markers
from agent.response.metabolic import assess as assess_metabolic
from agent.response.model import Alert, Assessment, Criterion, CriterionResult, Timeline
from agent.response.sites import split as split_by_site

Assess = Callable[[Timeline], CriterionResult]
Evaluate = Callable[[Timeline, tuple[CriterionResult, ...]], Iterable[Alert]]

#: Criterion -> (module in agent.response, function name). Output order is this order.
CRITERIA: dict[Criterion, tuple[str, str]] = {
    Criterion.RECIST: ("recist", "assess"),
    Criterion.IRECIST: ("irecist", "assess"),
    Criterion.CHOI: ("choi", "assess_choi"),
    Criterion.MCHOI: ("choi", "assess_mchoi"),
    Criterion.MRECIST: ("mrecist", "assess_mrecist"),
    Criterion.EASL: ("mrecist", "assess_easl"),
    Criterion.CHUN: ("morphology", "assess"),
}

_cache: dict[Criterion, Assess] = {}


def assessor(criterion: Criterion) -> Assess:
    """The function computing ``criterion`` (imported on first use)."""
    fn = _cache.get(criterion)
    if fn is None:
        module, name = CRITERIA[criterion]
        fn = cast(Assess, getattr(importlib.import_module(f"agent.response.{module}"), name))
        _cache[criterion] = fn
    return fn


@cache
def _alert_rules() -> Evaluate:
    """``alerts.evaluate`` (imported on first use, like the criteria)."""
    return cast(Evaluate, importlib.import_module("agent.response.alerts").evaluate)


def assess_timeline(timeline: Timeline, criteria: Iterable[Criterion] | None = None) -> Assessment:
    """Assess ``timeline`` under ``criteria`` (default: ``context.criteria``), then evaluate the alerts.

    RECIST 1.1 is always computed first when requested, and the results come out in ``CRITERIA`` order.
    """
    wanted = set(timeline.context.criteria if criteria is None else criteria)
    results = tuple(assessor(c)(timeline) for c in CRITERIA if c in wanted)
    alerts = tuple(_alert_rules()(timeline, results))
    return Assessment(
        sites=split_by_site(timeline),
        markers=assess_markers(timeline),
        metabolic=assess_metabolic(timeline),
        results=results,
        alerts=alerts,
        labels=tuple(timeline.label(i) for i in range(len(timeline.timepoints))),
        dates=tuple(tp.date for tp in timeline.timepoints),
        baseline_index=timeline.baseline_index,
    )
