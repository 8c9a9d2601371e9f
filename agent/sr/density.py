"""Mean attenuation (HU) of a lesion measured from its CT image, for measurement SRs that give diameters only.

Where the measurement group drew a region on the image (SCOORD POLYGON, a closed POLYLINE, ELLIPSE or
CIRCLE), the mean is taken inside it; otherwise inside the ellipse spanned by the long- and short-axis lines
(SCOORD POLYLINE of two points each): centred on the long axis' midpoint, its major semi-axis along the long
axis, its minor semi-axis half the short axis' length, perpendicular to the long axis whatever angle the short
axis line was drawn at. A pixel counts when its centre lies inside the shape (pixel (row r, column c) has its
centre at SCOORD (c + 0.5, r + 0.5)); pixels outside the image are excluded. Stored values become HU through
Rescale Slope and Intercept (frame-level values of an enhanced CT win); pixel spacing only turns the shape's
size into millimetres for the explanation.

Compressed pixel data (JPEG, JPEG-LS, JPEG 2000, RLE) is decoded by pydicom's decoders (the pylibjpeg,
openjpeg and JPEG-LS plugins are dependencies); only the referenced frame is decoded, and an image larger than
``max_frame_bytes`` is refused before decoding. An SR's own measured value always wins over a computed one
(the caller computes only when the group has none). Never touches the database or the network.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.pixels.utils import pixel_array

from agent.sr.read import MeasurementGroup, MeasurementKind, Region

CT_IMAGE_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
MAX_FRAME_BYTES = 64 * 1024 * 1024
MIN_PIXELS = 4
_AREA_TYPES = ("POLYGON", "ELLIPSE", "CIRCLE")


class DensityError(Exception):
    """The mean HU cannot be computed; ``reason`` says why (shown in the result)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Ellipse:
    """An ellipse in SCOORD image coordinates (column, row): centre, unit major direction, semi-axes (px)."""

    centre: tuple[float, float]
    direction: tuple[float, float]
    semi_major: float
    semi_minor: float


@dataclass(frozen=True, slots=True)
class Polygon:
    points: tuple[tuple[float, float], ...]


Shape = Ellipse | Polygon


@dataclass(frozen=True, slots=True)
class Outline:
    """Where to measure: the shape, the image it is drawn on, and how the shape was obtained."""

    shape: Shape
    sop_instance_uid: str
    frame: int | None  # 1-based frame number of a multi-frame image; None for a single frame
    method: str  # "region" (drawn by the reader) or "axes" (spanned by the measured axes)
    graphic_type: str


@dataclass(frozen=True, slots=True)
class Density:
    """The computed mean HU and how it was obtained."""

    mean_hu: Decimal
    pixels: int
    sop_instance_uid: str
    method: str
    area_mm2: Decimal | None

    @property
    def text(self) -> str:
        where = (
            "inside the region drawn by the reader"
            if self.method == "region"
            else "inside the ellipse spanned by the measured axes"
        )
        return (
            f"mean HU computed by liver-agent {where} on image {image_hash(self.sop_instance_uid)}, "
            f"{self.pixels} pixels"
        )


@runtime_checkable
class PixelSource(Protocol):
    """Measures on the images it holds (a series lookup that also has the files: the pipeline's index).

    Raises :class:`DensityError` when it does not hold the image or cannot measure it.
    """

    def measure_density(self, where: Outline) -> Density: ...


def image_hash(sop_instance_uid: str) -> str:
    """A short, stable, non-identifying name of an image for explanations and logs."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------------------
# Where to measure


def outline(group: MeasurementGroup) -> Outline | None:
    """The drawn area region of the group, else the ellipse of its long/short axis lines; None if neither."""
    regions: list[Region] = [r for r in group.regions if r.frame_of_reference_uid is None]
    regions += [
        m.region
        for m in group.measurements
        if m.region is not None and m.region.frame_of_reference_uid is None
    ]
    for region in regions:
        shape = _area_shape(region)
        if shape is not None and region.image is not None:
            return Outline(
                shape, region.image.sop_instance_uid, _frame(region), "region", region.graphic_type
            )
    long_m = group.first(MeasurementKind.LONG_AXIS) or group.first(MeasurementKind.LENGTH)
    short_m = group.first(MeasurementKind.SHORT_AXIS) or group.first(MeasurementKind.PERPENDICULAR)
    if long_m is None or short_m is None or long_m.region is None or short_m.region is None:
        return None
    lr, sr = long_m.region, short_m.region
    if lr.image is None or lr.frame_of_reference_uid is not None or sr.frame_of_reference_uid is not None:
        return None
    if sr.image is not None and sr.image.sop_instance_uid != lr.image.sop_instance_uid:
        return None
    ellipse = axes_ellipse(_line(lr.points), _line(sr.points))
    if ellipse is None:
        return None
    return Outline(ellipse, lr.image.sop_instance_uid, _frame(lr), "axes", "POLYLINE")


def axes_ellipse(
    long_line: tuple[tuple[float, float], tuple[float, float]] | None,
    short_line: tuple[tuple[float, float], tuple[float, float]] | None,
) -> Ellipse | None:
    """The ellipse spanned by a long-axis and a short-axis line (SCOORD column/row end points)."""
    if long_line is None or short_line is None:
        return None
    (x0, y0), (x1, y1) = long_line
    (u0, v0), (u1, v1) = short_line
    length = math.hypot(x1 - x0, y1 - y0)
    width = math.hypot(u1 - u0, v1 - v0)
    if length <= 0 or width <= 0:
        return None
    direction = ((x1 - x0) / length, (y1 - y0) / length)
    return Ellipse(((x0 + x1) / 2, (y0 + y1) / 2), direction, length / 2, width / 2)


def _line(points: Sequence[float]) -> tuple[tuple[float, float], tuple[float, float]] | None:
    if len(points) != 4:
        return None
    return (points[0], points[1]), (points[2], points[3])


def _pairs(points: Sequence[float]) -> list[tuple[float, float]]:
    return [(points[i], points[i + 1]) for i in range(0, len(points) - 1, 2)]


def _area_shape(region: Region) -> Shape | None:
    kind = region.graphic_type.upper()
    pts = _pairs(region.points)
    if kind == "CIRCLE" and len(pts) == 2:
        (cx, cy), (px, py) = pts
        radius = math.hypot(px - cx, py - cy)
        return Ellipse((cx, cy), (1.0, 0.0), radius, radius) if radius > 0 else None
    if kind == "ELLIPSE" and len(pts) == 4:
        major = axes_ellipse((pts[0], pts[1]), (pts[2], pts[3]))
        if major is None:
            return None
        cx = (pts[0][0] + pts[1][0] + pts[2][0] + pts[3][0]) / 4
        cy = (pts[0][1] + pts[1][1] + pts[2][1] + pts[3][1]) / 4
        return Ellipse((cx, cy), major.direction, major.semi_major, major.semi_minor)
    closed = len(pts) >= 4 and pts[0] == pts[-1]
    if (kind == "POLYGON" and len(pts) >= 3) or (kind == "POLYLINE" and closed):
        return Polygon(tuple(pts[:-1] if pts[0] == pts[-1] else pts))
    return None


def _frame(region: Region) -> int | None:
    frames = region.image.frames if region.image is not None else ()
    return frames[0] if frames else None


# --------------------------------------------------------------------------------------------------------
# Masks (in the bounding box only: memory follows the lesion, not the image)


def _bounds(shape: Shape, rows: int, columns: int) -> tuple[int, int, int, int] | None:
    if isinstance(shape, Ellipse):
        cx, cy = shape.centre
        r = max(shape.semi_major, shape.semi_minor)
        xs, ys = (cx - r, cx + r), (cy - r, cy + r)
    else:
        xs = (min(p[0] for p in shape.points), max(p[0] for p in shape.points))
        ys = (min(p[1] for p in shape.points), max(p[1] for p in shape.points))
    c0, c1 = max(0, math.floor(xs[0] - 0.5)), min(columns, math.ceil(xs[1] + 0.5))
    r0, r1 = max(0, math.floor(ys[0] - 0.5)), min(rows, math.ceil(ys[1] + 0.5))
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


def mask(shape: Shape, rows: int, columns: int) -> tuple[tuple[int, int], npt.NDArray[np.bool_]] | None:
    """((first row, first column), boolean mask of the bounding box) of the pixels whose centre is inside."""
    bounds = _bounds(shape, rows, columns)
    if bounds is None:
        return None
    r0, r1, c0, c1 = bounds
    ys, xs = np.mgrid[r0:r1, c0:c1].astype(np.float64) + 0.5
    if isinstance(shape, Ellipse):
        dx, dy = xs - shape.centre[0], ys - shape.centre[1]
        ux, uy = shape.direction
        along = (dx * ux + dy * uy) / shape.semi_major
        across = (-dx * uy + dy * ux) / shape.semi_minor
        inside = along * along + across * across <= 1.0
    else:
        inside = np.zeros(xs.shape, dtype=bool)
        pts = shape.points
        for i in range(len(pts)):  # even-odd rule, one edge at a time
            (xa, ya), (xb, yb) = pts[i], pts[(i + 1) % len(pts)]
            if ya == yb:
                continue
            crosses = (ya > ys) != (yb > ys)
            x_at = xa + (ys - ya) * (xb - xa) / (yb - ya)
            inside ^= crosses & (xs < x_at)
    return (r0, c0), inside


# --------------------------------------------------------------------------------------------------------
# Pixels


def _number(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _rescale(ds: Any, frame_index: int) -> tuple[float, float]:
    """(slope, intercept): per-frame, shared functional groups, then the top level."""
    for seq_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(seq_name)
        if not seq:
            continue
        item = seq[min(frame_index, len(seq) - 1)] if seq_name.startswith("PerFrame") else seq[0]
        transform = item.get("PixelValueTransformationSequence")
        if transform:
            return _number(transform[0].get("RescaleSlope"), 1.0), _number(
                transform[0].get("RescaleIntercept"), 0.0
            )
    return _number(ds.get("RescaleSlope"), 1.0), _number(ds.get("RescaleIntercept"), 0.0)


def _spacing(ds: Any) -> tuple[float, float] | None:
    value = ds.get("PixelSpacing")
    if not value:
        for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            seq = ds.get(seq_name)
            measures = seq[0].get("PixelMeasuresSequence") if seq else None
            if measures:
                value = measures[0].get("PixelSpacing")
                break
    try:
        return (float(value[0]), float(value[1])) if value and len(value) == 2 else None
    except (TypeError, ValueError):
        return None


def measure(path: Path, where: Outline, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> Density:
    """Mean HU inside ``where`` on the CT image at ``path``; :class:`DensityError` says why not."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise DensityError(f"image unreadable ({type(exc).__name__})") from exc
    if str(header.get("SOPInstanceUID", "")) != where.sop_instance_uid:
        raise DensityError("the file is not the referenced image")
    modality = str(header.get("Modality", "") or "").upper()
    sop_class = str(header.get("SOPClassUID", "") or "")
    if modality != "CT" and (modality or sop_class not in CT_IMAGE_CLASSES):
        raise DensityError(f"the image is {modality or 'not'} CT: no Hounsfield units")
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    bits = int(header.get("BitsAllocated", 16) or 16)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if rows <= 0 or columns <= 0 or samples != 1:
        raise DensityError("the image has no single-sample pixel matrix")
    if rows * columns * max(bits // 8, 1) > max_frame_bytes:
        raise DensityError(f"the image frame is larger than {max_frame_bytes} bytes")
    index = (where.frame - 1) if where.frame else 0
    if not 0 <= index < frames:
        raise DensityError(f"frame {where.frame} is not in the image ({frames} frames)")
    found = mask(where.shape, rows, columns)
    if found is None:
        raise DensityError("the measured region lies outside the image")
    (r0, c0), inside = found
    count = int(inside.sum())
    if count < MIN_PIXELS:
        raise DensityError(f"only {count} pixels inside the measured region")
    try:
        pixels = pixel_array(path, index=index if frames > 1 else None)
    except Exception as exc:
        raise DensityError(f"pixel data cannot be decoded ({type(exc).__name__}: {exc})"[:200]) from exc
    if pixels.shape[-2:] != (rows, columns):
        raise DensityError("decoded pixel matrix does not match Rows/Columns")
    box = pixels[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]]
    slope, intercept = _rescale(header, index)
    mean_stored = float(box[inside].astype(np.float64).mean())
    mean_hu = Decimal(repr(round(mean_stored * slope + intercept, 1)))
    spacing = _spacing(header)
    area = Decimal(repr(round(count * spacing[0] * spacing[1], 1))) if spacing else None
    return Density(mean_hu, count, where.sop_instance_uid, where.method, area)
