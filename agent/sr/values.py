"""DICOM value helpers shared by the SR layer and everything above it (pipeline, alerts, web)."""

from __future__ import annotations

from datetime import date


def parse_da(value: object) -> date | None:
    """DICOM DA text (``YYYYMMDD``, extra characters ignored) -> date; None when absent or invalid."""
    text = str(value).strip() if value is not None else ""
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def iso_da(value: object) -> str | None:
    """DICOM DA text -> ``YYYY-MM-DD`` for display; None when absent or invalid."""
    parsed = parse_da(value)
    return parsed.isoformat() if parsed else None
