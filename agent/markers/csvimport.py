"""``liver-agent markers import FILE.csv``: a batch of tumour marker results.

Columns (header row, any order; extra columns are an error so a misspelt one is never dropped):
``patient_id`` (required), ``issuer`` (optional), ``marker``, ``date`` (ISO), ``value``, ``unit``,
``lower_limit``, ``upper_limit`` (optional). Every row is validated before any is stored; one bad row
rejects the file with its line number and the field.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from agent.markers.store import PatientMarker
from agent.response.parse import ValidationError, marker_from_dict

REQUIRED = ("patient_id", "marker", "date", "value", "unit")
OPTIONAL = ("issuer", "lower_limit", "upper_limit")
MAX_ROWS = 1_000_000


class MarkerImportError(ValueError):
    """The file cannot be imported; ``str(exc)`` names the line and the field."""


def read_csv(lines: Iterable[str], source: str = "csv") -> list[PatientMarker]:
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise MarkerImportError(f"line 1: missing column(s) {', '.join(missing)}")
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise MarkerImportError(f"line 1: unknown column(s) {', '.join(unknown)}")
    out: list[PatientMarker] = []
    for row in reader:
        line = reader.line_num
        if len(out) >= MAX_ROWS:
            raise MarkerImportError(f"line {line}: more than {MAX_ROWS} rows")
        if None in row:
            raise MarkerImportError(f"line {line}: more fields than columns")
        patient = (row.get("patient_id") or "").strip()
        if not patient or len(patient) > 64:
            raise MarkerImportError(f"line {line}: patient_id must be 1 to 64 characters")
        data = {k: v for k, v in row.items() if k in ("marker", "date", "value", "unit") or (v or "").strip()}
        data.pop("patient_id", None)
        data.pop("issuer", None)
        try:
            result = marker_from_dict(data, f"line {line}")
        except ValidationError as exc:
            raise MarkerImportError(str(exc)) from None
        issuer = (row.get("issuer") or "").strip()[:64]
        out.append(PatientMarker(patient, issuer, result, source, f"{source}:{line}"))
    return out


def read_text(text: str) -> list[PatientMarker]:
    return read_csv(io.StringIO(text))
