"""The ``markers`` table: one result per (patient, marker, sample day); a later result of that day (an HL7
correction, a re-import) replaces it. ``save`` writes within the caller's transaction; the caller commits
before it acknowledges (an HL7 ACK AA is sent only after the commit)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from agent.db.models import MarkerRecord
from agent.response.model import Marker, MarkerResult


@dataclass(frozen=True, slots=True)
class PatientMarker:
    """One result for one patient, as received."""

    patient_id: str
    issuer: str
    result: MarkerResult
    source: str  # "hl7" or "csv"
    source_id: str | None = None


def _text(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.normalize():f}"


def save(session: Session, items: Iterable[PatientMarker]) -> int:
    """Insert or replace each result (same patient, marker and day); returns how many were written."""
    n = 0
    for item in items:
        r = item.result
        row = session.scalars(
            select(MarkerRecord).where(
                MarkerRecord.patient_id == item.patient_id,
                MarkerRecord.issuer == item.issuer,
                MarkerRecord.marker == r.marker.value,
                MarkerRecord.sample_date == r.date.isoformat(),
            )
        ).first()
        if row is None:
            row = MarkerRecord(
                patient_id=item.patient_id,
                issuer=item.issuer,
                marker=r.marker.value,
                sample_date=r.date.isoformat(),
            )
            session.add(row)
        row.value = _text(r.value) or "0"
        row.unit = r.unit
        row.lower_limit = _text(r.lower_limit)
        row.upper_limit = _text(r.upper_limit)
        row.source = item.source
        row.source_id = item.source_id
        n += 1
    session.flush()
    return n


def load(session: Session, patient_id: str, issuer: str = "") -> list[MarkerResult]:
    """The patient's results in date order. The issuer must match, except that a result or a study without
    an issuer matches on the patient ID alone."""
    query = select(MarkerRecord).where(MarkerRecord.patient_id == patient_id)
    if issuer:
        query = query.where(or_(MarkerRecord.issuer == issuer, MarkerRecord.issuer == ""))
    rows = session.scalars(query.order_by(MarkerRecord.sample_date, MarkerRecord.marker)).all()
    return [to_result(row) for row in rows]


def to_result(row: MarkerRecord) -> MarkerResult:
    return MarkerResult(
        marker=Marker(row.marker),
        date=date.fromisoformat(row.sample_date),
        value=Decimal(row.value),
        unit=row.unit,
        lower_limit=None if row.lower_limit is None else Decimal(row.lower_limit),
        upper_limit=None if row.upper_limit is None else Decimal(row.upper_limit),
    )


def as_timeline_dicts(results: Sequence[MarkerResult]) -> list[dict[str, object]]:
    """The results in the timeline JSON shape (``markers`` of docs/criteria.md §13.2)."""
    return [
        {
            "marker": r.marker.value,
            "date": r.date.isoformat(),
            "value": _text(r.value),
            "unit": r.unit,
            "lower_limit": _text(r.lower_limit),
            "upper_limit": _text(r.upper_limit),
        }
        for r in results
    ]
