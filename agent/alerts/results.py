"""Read the stored result of a study (the pipeline's ``output_versions`` rows) as JSON for alerts and pages.

The pipeline stores, per study and version, a ``detail`` JSON holding the Assessment JSON (``assessment``)
and what it was computed from; the timeline (``timeline``) and the study's time-point index
(``timepoint``) are used when present. Never writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.db.models import OutputVersion
from agent.response.model import Criterion

CRITERION_LABELS = {c.key: c.value for c in Criterion}
# Display names (RECIST1.1 reads better with a space).
CRITERION_LABELS["recist"] = "RECIST 1.1"


@dataclass(frozen=True)
class StoredResult:
    study_pk: int
    version: int
    kind: str
    created_at: datetime
    assessment: dict[str, Any]
    timeline: dict[str, Any] | None
    timepoint: int | None  # index of the study's time point in the assessment arrays

    def criteria(self) -> list[str]:
        """Assessment JSON keys of the criteria computed, in the order of ``Criterion``."""
        return [c.key for c in Criterion if isinstance(self.assessment.get(c.key), Mapping)]

    def category(self, key: str, timepoint: int | None = None) -> str | None:
        tp = self.timepoint if timepoint is None else timepoint
        block = self.assessment.get(key)
        if tp is None or not isinstance(block, Mapping):
            return None
        values = block.get("timepoint_responses") or []
        return values[tp] if 0 <= tp < len(values) else None


def parse_detail(detail: str) -> tuple[dict[str, Any], dict[str, Any] | None, int | None]:
    data = json.loads(detail) if detail else {}
    if not isinstance(data, dict):
        return {}, None, None
    inner = data.get("assessment")
    assessment: dict[str, Any] = inner if isinstance(inner, dict) else data
    tl = data.get("timeline")
    timeline: dict[str, Any] | None = tl if isinstance(tl, dict) else None
    tp = data.get("timepoint")
    if not isinstance(tp, int):
        counts = [
            len(v["timepoint_responses"])
            for v in assessment.values()
            if isinstance(v, dict) and isinstance(v.get("timepoint_responses"), list)
        ]
        tp = max(counts) - 1 if counts else None
    return assessment, timeline, tp


def current_result(session: Session, study_pk: int) -> StoredResult | None:
    """The current (newest) stored result of a study, or None."""
    row = session.scalars(
        select(OutputVersion)
        .where(OutputVersion.study_pk == study_pk)
        .order_by(OutputVersion.current.desc(), OutputVersion.version.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    assessment, timeline, tp = parse_detail(row.detail)
    return StoredResult(
        study_pk=row.study_pk,
        version=row.version,
        kind=row.kind,
        created_at=row.created_at,
        assessment=assessment,
        timeline=timeline,
        timepoint=tp,
    )
