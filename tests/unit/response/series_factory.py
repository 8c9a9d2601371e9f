"""Factories for Choi / mRECIST / EASL / Chun / alert tests: a vectors.json-shaped case, parsed by the parser.

Each visit is a dict with ``lesions`` and any time point field to override (modality, phase, contrast,
slice_thickness_mm, days = offset from treatment start).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from agent.response.model import Assessment, Criterion, Timeline
from agent.response.parse import timeline_from_dict
from agent.response.table import assess_timeline

START = date(2024, 1, 15)


def lesion(
    lid: str, mm: float | str | None = None, kind: str = "target", organ: str = "liver", **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": lid, "organ": organ, "kind": kind, **extra}
    if mm is not None:
        out["long_axis_mm"] = mm
    return out


def visit(*lesions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"lesions": list(lesions), **fields}


def case(
    *visits: dict[str, Any],
    criteria: tuple[str, ...] = ("RECIST1.1",),
    primary: str = "CRC",
    therapy: tuple[str, ...] = ("FOLFOX",),
    options: dict[str, Any] | None = None,
    treatment_start: date = START,
) -> dict[str, Any]:
    """Visit 0 is 7 days before treatment start, then one every 56 days unless ``days`` is given."""
    timepoints = []
    for i, v in enumerate(visits):
        fields = dict(v)
        offset = fields.pop("days", -7 + 56 * i)
        tp: dict[str, Any] = {
            "date": (treatment_start + timedelta(days=offset)).isoformat(),
            "modality": "CT",
            "phase": "portal_venous",
            "slice_thickness_mm": 2.5,
            "contrast": True,
        }
        tp.update(fields)
        timepoints.append(tp)
    return {
        "context": {
            "treatment_start": treatment_start.isoformat(),
            "primary": primary,
            "therapy": list(therapy),
            "criteria": list(criteria),
        },
        "options": options or {},
        "timepoints": timepoints,
    }


def timeline(*visits: dict[str, Any], **kw: Any) -> Timeline:
    return timeline_from_dict(case(*visits, **kw))


def assess(*visits: dict[str, Any], **kw: Any) -> Assessment:
    return assess_timeline(timeline(*visits, **kw))


def categories(assessment: Assessment, criterion: Criterion) -> list[str | None]:
    result = assessment.get(criterion)
    assert result is not None
    return [c.value if c is not None else None for c in result.categories()]


def alert_keys(assessment: Assessment) -> set[tuple[str, int | None]]:
    return {(a.code, a.timepoint) for a in assessment.alerts}


def alert_codes(assessment: Assessment) -> set[str]:
    return {a.code for a in assessment.alerts}
