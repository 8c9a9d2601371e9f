"""Stated lengths checked against the drawing: a measurement's 2D region and the pixel spacing of its image.

A length, long axis or short axis drawn as a two-point line (or an ellipse's axes) on an image of known
Pixel Spacing has a geometric length. The stated value must agree with it (within 5 % or 0.5 mm). When it
disagrees by a clean factor that only one reading explains, it is corrected with a note:

- half the drawn length: a writer that stores the semi-axis under "Long axis" / "Short axis";
- the drawn length in pixels: pixels stated as mm.

Any other disagreement, or one two readings explain, is flagged and the value is not used. No region, a
region of another shape, or an unknown spacing: nothing to check, the stated value stands.

Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from agent.sr.read import Measurement, MeasurementKind, Region

RELATIVE_TOLERANCE = 0.05
ABSOLUTE_TOLERANCE_MM = 0.5
LENGTH_KINDS = (MeasurementKind.LONG_AXIS, MeasurementKind.SHORT_AXIS, MeasurementKind.LENGTH)


@dataclass(frozen=True, slots=True)
class Checked:
    value: Decimal | None  # the value to use (None: flagged, not used)
    note: str | None  # what was found, when it is not plain agreement


def _agree(a: float, b: float) -> bool:
    return abs(a - b) <= max(ABSOLUTE_TOLERANCE_MM, RELATIVE_TOLERANCE * max(abs(a), abs(b)))


def _segments(region: Region) -> list[tuple[float, float, float, float]]:
    p = region.points
    if region.frame_of_reference_uid is not None:
        return []  # SCOORD3D: patient coordinates, no pixel spacing involved
    if region.graphic_type == "POLYLINE" and len(p) == 4:
        return [(p[0], p[1], p[2], p[3])]
    if region.graphic_type == "ELLIPSE" and len(p) == 8:
        return [(p[0], p[1], p[2], p[3]), (p[4], p[5], p[6], p[7])]
    return []


def drawn_mm(measurement: Measurement, spacing: tuple[Decimal, Decimal]) -> tuple[float, float] | None:
    """(length in mm, length in pixels) of what was drawn for this measurement, None when not checkable."""
    region = measurement.region
    if region is None:
        return None
    segments = _segments(region)
    if not segments:
        return None
    row, column = float(spacing[0]), float(spacing[1])
    lengths = [
        (math.hypot((x2 - x1) * column, (y2 - y1) * row), math.hypot(x2 - x1, y2 - y1))
        for x1, y1, x2, y2 in segments
    ]
    if len(lengths) == 1:
        return lengths[0]
    if measurement.kind is MeasurementKind.SHORT_AXIS:
        return min(lengths)
    return max(lengths)


def check_length(measurement: Measurement, spacing: tuple[Decimal, Decimal] | None) -> Checked:
    """The value of a length-like measurement after comparing it with its drawing (see the module doc)."""
    if measurement.kind not in LENGTH_KINDS or spacing is None or measurement.unit != "mm":
        return Checked(measurement.value, None)
    drawn = drawn_mm(measurement, spacing)
    if drawn is None:
        return Checked(measurement.value, None)
    mm, px = drawn
    stated = float(measurement.value)
    name = measurement.kind.value.replace("_mm", "").replace("_", " ")
    if mm <= 0:
        return Checked(None, f"{name} {stated:g} mm: its drawing has no length; not used")
    if _agree(stated, mm):
        return Checked(measurement.value, None)
    readings = []
    if _agree(stated * 2, mm):
        readings.append(("a semi-axis: half the drawn", Decimal(str(round(mm, 2)))))
    if _agree(stated, px):
        readings.append(("pixels stated as mm: the drawn line is", Decimal(str(round(mm, 2)))))
    if len(readings) == 1:
        what, value = readings[0]
        return Checked(
            value, f"{name} stated {stated:g} mm is {what} {mm:.1f} mm; the drawn {value} mm is used"
        )
    why = "two readings explain it" if readings else "no clean factor explains it"
    return Checked(
        None, f"{name} stated {stated:g} mm disagrees with the drawn {mm:.1f} mm ({why}); not used"
    )


def check_ellipse_area(measurement: Measurement, spacing: tuple[Decimal, Decimal] | None) -> str | None:
    """A note when an ellipse's stated area disagrees with its drawn axes (None: agrees or not checkable)."""
    region = measurement.region
    if measurement.kind is not MeasurementKind.AREA or spacing is None or region is None:
        return None
    if region.graphic_type != "ELLIPSE" or region.frame_of_reference_uid is not None:
        return None
    segments = _segments(region)
    if len(segments) != 2:
        return None
    row, column = float(spacing[0]), float(spacing[1])
    a, b = (math.hypot((x2 - x1) * column, (y2 - y1) * row) for x1, y1, x2, y2 in segments)
    expected = math.pi * a * b / 4
    stated = float(measurement.value)
    if abs(stated - expected) <= RELATIVE_TOLERANCE * expected:
        return None
    return f"area stated {stated:g} mm2 disagrees with the drawn ellipse ({expected:.1f} mm2); not used"
