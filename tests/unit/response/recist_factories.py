"""Small factories for timelines in tests (dict shape of a vectors.json case, parsed by the real parser)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from agent.response.model import Timeline
from agent.response.parse import timeline_from_dict

START = date(2024, 1, 15)


def target(lid: str, mm: float | str | None, organ: str = "liver", **extra: Any) -> dict[str, Any]:
    return {"id": lid, "organ": organ, "kind": "target", "long_axis_mm": mm, **extra}


def node(lid: str, short_mm: float | str | None, **extra: Any) -> dict[str, Any]:
    return {
        "id": lid,
        "organ": "lymph_node",
        "kind": "target",
        "is_node": True,
        "short_axis_mm": short_mm,
        **extra,
    }


def non_target(lid: str, status: str = "present", organ: str = "liver", **extra: Any) -> dict[str, Any]:
    return {"id": lid, "organ": organ, "kind": "non-target", "status": status, **extra}


def new(lid: str, mm: float | None = 8, status: str = "unequivocal", **extra: Any) -> dict[str, Any]:
    return {"id": lid, "organ": "liver", "kind": "new", "long_axis_mm": mm, "status": status, **extra}


def case(
    *visits: list[dict[str, Any]],
    days: list[int] | None = None,
    criteria: tuple[str, ...] = ("RECIST1.1",),
    options: dict[str, Any] | None = None,
    primary: str = "CRC",
) -> dict[str, Any]:
    """A case dict: visit 0 is the baseline 7 days before treatment start, then every 56 days by default."""
    offsets = days if days is not None else [-7 + 56 * i for i in range(len(visits))]
    return {
        "context": {
            "treatment_start": START.isoformat(),
            "primary": primary,
            "therapy": ["FOLFOX"],
            "criteria": list(criteria),
        },
        "options": options or {},
        "timepoints": [
            {
                "date": (START + timedelta(days=d)).isoformat(),
                "modality": "CT",
                "phase": "portal_venous",
                "slice_thickness_mm": 2.5,
                "contrast": True,
                "lesions": lesions,
            }
            for d, lesions in zip(offsets, visits, strict=True)
        ],
    }


def timeline(*visits: list[dict[str, Any]], **kw: Any) -> Timeline:
    return timeline_from_dict(case(*visits, **kw))


def sums(*values: float | str, **kw: Any) -> Timeline:
    """A one-target series with these sums."""
    return timeline(*[[target("T1", v)] for v in values], **kw)
