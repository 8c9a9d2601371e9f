"""Mean HU measured from CT pixels: synthetic images with known values (a 40 HU disc in 80 HU liver)."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from agent.sr.codes import Code
from agent.sr.density import DensityError, Ellipse, Outline, Polygon, axes_ellipse, measure, outline
from agent.sr.read import ImageRef, Measurement, MeasurementGroup, MeasurementKind, Region

SIZE = 256
CENTRE = (120.3, 100.7)  # SCOORD (column, row)
RADIUS_PX = 20.0


def phantom(lesion_hu: int = 40, liver_hu: int = 80, radius: float = RADIUS_PX) -> np.ndarray:
    """HU image: liver everywhere, a disc of ``lesion_hu`` around CENTRE (pixel centres inside)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(float) + 0.5
    hu = np.full((SIZE, SIZE), liver_hu, dtype=np.int16)
    hu[(cols - CENTRE[0]) ** 2 + (rows - CENTRE[1]) ** 2 <= radius**2] = lesion_hu
    return hu


def ct_file(
    path: Path,
    hu: np.ndarray,
    transfer_syntax: str = ExplicitVRLittleEndian,
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
) -> tuple[Path, str]:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID = "DENSITY"
    ds.Modality = modality
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [0.75, 0.75]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    stored = np.round((hu.astype(float) - intercept) / slope).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, stored)
    ds.save_as(path, enforce_file_format=True)
    return path, str(ds.SOPInstanceUID)


def axes_group(uid: str, long_line: list[float], short_line: list[float]) -> MeasurementGroup:
    image = ImageRef(CTImageStorage, uid)
    mm = Code("mm", "UCUM", "millimeter")

    def num(kind: MeasurementKind, points: list[float]) -> Measurement:
        length = math.dist(points[:2], points[2:]) * 0.75
        return Measurement(
            Code("x", "99T", kind.value),
            kind,
            Decimal(str(round(length, 1))),
            "mm",
            str(length),
            mm,
            region=Region("POLYLINE", tuple(points), image),
        )

    return MeasurementGroup(
        tracking_identifier="T1",
        tracking_uid=None,
        finding=None,
        finding_category=None,
        finding_sites=(),
        measurements=(
            num(MeasurementKind.LONG_AXIS, long_line),
            num(MeasurementKind.SHORT_AXIS, short_line),
        ),
        images=(image,),
        regions=(),
        time_point=None,
        evaluations=(),
    )


def _line(angle_deg: float, half: float, centre: tuple[float, float] = CENTRE) -> list[float]:
    a = math.radians(angle_deg)
    dx, dy = half * math.cos(a), half * math.sin(a)
    return [centre[0] - dx, centre[1] - dy, centre[0] + dx, centre[1] + dy]


def test_disc_of_40_hu_in_80_hu_liver_measured_inside_the_axes_ellipse(tmp_path: Path) -> None:
    path, uid = ct_file(tmp_path / "ct.dcm", phantom())
    where = outline(axes_group(uid, _line(0, 18), _line(90, 17)))
    assert where is not None and where.method == "axes"
    d = measure(path, where)
    assert abs(d.mean_hu - 40) <= 1
    assert d.pixels == pytest.approx(math.pi * 18 * 17, rel=0.05)
    assert d.text.startswith(
        "mean HU computed by liver-agent inside the ellipse spanned by the measured axes"
    )
    assert f"{d.pixels} pixels" in d.text and uid not in d.text


@pytest.mark.parametrize(("long_angle", "short_angle"), [(30, 120), (-55, 35), (20, 75)])
def test_rotated_and_oblique_axis_pairs(tmp_path: Path, long_angle: float, short_angle: float) -> None:
    path, uid = ct_file(tmp_path / "ct.dcm", phantom())
    where = outline(axes_group(uid, _line(long_angle, 19), _line(short_angle, 15)))
    assert where is not None
    d = measure(path, where)
    assert abs(d.mean_hu - 40) <= 1
    assert isinstance(where.shape, Ellipse)
    # The ellipse follows the long axis; the short line only gives the width, whatever its angle.
    ux, uy = where.shape.direction
    assert math.degrees(math.atan2(uy, ux)) == pytest.approx(long_angle)


def test_an_axis_pair_larger_than_the_disc_mixes_in_the_liver(tmp_path: Path) -> None:
    path, uid = ct_file(tmp_path / "ct.dcm", phantom(radius=10))
    d = measure(path, outline(axes_group(uid, _line(0, 20), _line(90, 20))) or pytest.fail("no outline"))
    # 10 px disc inside a 20 px circle: a quarter lesion, three quarters liver.
    assert float(d.mean_hu) == pytest.approx(40 * 0.25 + 80 * 0.75, abs=1.5)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless, RLELossless])
def test_compressed_transfer_syntaxes_are_decoded(tmp_path: Path, syntax: str) -> None:
    path, uid = ct_file(tmp_path / "ct.dcm", phantom(), transfer_syntax=syntax)
    d = measure(path, outline(axes_group(uid, _line(10, 18), _line(100, 18))) or pytest.fail("no outline"))
    assert abs(d.mean_hu - 40) <= 1


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    path, uid = ct_file(tmp_path / "ct.dcm", phantom(), slope=0.5, intercept=-1000)
    d = measure(path, outline(axes_group(uid, _line(0, 18), _line(90, 18))) or pytest.fail("no outline"))
    assert abs(d.mean_hu - 40) <= 1


def test_drawn_polygon_circle_and_ellipse_regions_win_over_the_axes(tmp_path: Path) -> None:
    path, uid = ct_file(tmp_path / "ct.dcm", phantom())
    image = ImageRef(CTImageStorage, uid)
    cx, cy = CENTRE
    square = (cx - 12, cy - 12, cx + 12, cy - 12, cx + 12, cy + 12, cx - 12, cy + 12, cx - 12, cy - 12)
    regions = {
        "POLYLINE": square,  # a closed polyline is a polygon
        "POLYGON": square[:-2],
        "CIRCLE": (cx, cy, cx + 15, cy),
        "ELLIPSE": (cx - 18, cy, cx + 18, cy, cx, cy - 9, cx, cy + 9),
    }
    for graphic_type, points in regions.items():
        group = axes_group(uid, _line(0, 60), _line(90, 60))  # axes far larger than the disc
        group = MeasurementGroup(
            **{
                **{f: getattr(group, f) for f in group.__slots__},
                "regions": (Region(graphic_type, points, image),),
            }
        )
        where = outline(group)
        assert where is not None and where.method == "region", graphic_type
        d = measure(path, where)
        assert abs(d.mean_hu - 40) <= 1, graphic_type
        assert "inside the region drawn by the reader" in d.text


def test_pixels_outside_the_image_are_excluded(tmp_path: Path) -> None:
    hu = np.full((SIZE, SIZE), 80, dtype=np.int16)
    hu[:, :10] = 30  # a 10-column strip at the left edge
    path, uid = ct_file(tmp_path / "ct.dcm", hu)
    where = Outline(Ellipse((0.0, 100.0), (0.0, 1.0), 40.0, 10.0), uid, None, "axes", "POLYLINE")
    d = measure(path, where)
    assert abs(d.mean_hu - 30) <= 1
    assert d.pixels == pytest.approx(math.pi * 40 * 10 / 2, rel=0.05)  # the half inside the image
    off = Outline(Polygon(((-50.0, -50.0), (-10.0, -50.0), (-10.0, -10.0))), uid, None, "region", "POLYGON")
    with pytest.raises(DensityError, match="outside the image"):
        measure(path, off)


def test_not_ct_no_axes_wrong_file_and_oversized_frames_are_refused(tmp_path: Path) -> None:
    path, uid = ct_file(tmp_path / "mr.dcm", phantom(), modality="MR")
    ct_path, ct_uid = ct_file(tmp_path / "ct.dcm", phantom())
    where = outline(axes_group(uid, _line(0, 18), _line(90, 18)))
    assert where is not None
    with pytest.raises(DensityError, match="no Hounsfield units"):
        measure(path, where)
    with pytest.raises(DensityError, match="not the referenced image"):
        measure(ct_path, where)
    ct_where = outline(axes_group(ct_uid, _line(0, 18), _line(90, 18)))
    assert ct_where is not None
    with pytest.raises(DensityError, match="larger than"):
        measure(ct_path, ct_where, max_frame_bytes=1000)
    assert axes_ellipse(None, ((0.0, 0.0), (1.0, 1.0))) is None
    lone = axes_group(ct_uid, _line(0, 18), _line(90, 18))
    lone = MeasurementGroup(
        **{**{f: getattr(lone, f) for f in lone.__slots__}, "measurements": lone.measurements[:1]}
    )
    assert outline(lone) is None
