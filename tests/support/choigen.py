"""A GIST patient in the shape of a real one: portal-venous CT images with lesions of known attenuation, and a
viewer's measurement SR per visit that draws the long and short axes on them (diameters only, or with the
mean HU too).

Each lesion is an ellipse of uniform attenuation in 80 HU liver on its own 160 x 160 slice (0.8 mm pixels),
rotated 20 degrees; the SR's axis lines (SCOORD POLYLINE under each NUM, as OHIF writes them) span 87 % of
it, so the mean HU inside the ellipse of the axes is the lesion's value. Images can be written in a
compressed transfer syntax (JPEG-LS, JPEG 2000).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from agent.sr import codes as our

ROOT = "1.2.826.0.1.3680043.10.1447.13."
SIZE = 160
SPACING = 0.8
ANGLE = math.radians(20)
LIVER_HU = 80
MM = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
HU = hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")


def uid(*parts: object) -> str:
    digest = int(hashlib.sha256(".".join(map(str, parts)).encode()).hexdigest()[:24], 16)
    return f"{ROOT}{digest}"


@dataclass(frozen=True)
class Lesion:
    identifier: str  # Tracking Identifier, e.g. "liver seg 7"
    tracking: str  # seed of the Tracking UID (the same at every visit)
    long_mm: float
    short_mm: float
    hu: float
    organ: str = "liver"  # the finding site: "liver" or "lung"


@dataclass(frozen=True)
class Visit:
    patient_id: str
    name: str  # bl, fu1, fu2
    day: date
    series_description: str
    lesions: tuple[Lesion, ...]
    transfer_syntax: str = ExplicitVRLittleEndian
    study_description: str = "CT ABDOMEN GIST FOLLOW-UP"
    extra_slices: int = 2  # liver-only slices nobody measured on (a retrieval must not fetch them)
    contrast_timing: bool = True  # Contrast/Bolus Start Time (70 s before the acquisition)

    @property
    def study_uid(self) -> str:
        return uid(self.patient_id, self.name)


def _axes_px(lesion: Lesion) -> tuple[float, float]:
    return lesion.long_mm / SPACING, lesion.short_mm / SPACING


def _pixels(lesion: Lesion) -> np.ndarray:
    """Stored values (HU + 1024): liver, and the lesion ellipse 15 % larger than its measured axes."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(float) + 0.5
    cx = cy = SIZE / 2
    long_px, short_px = _axes_px(lesion)
    a, b = long_px / 2 * 1.15, short_px / 2 * 1.15
    dx, dy = cols - cx, rows - cy
    u = (dx * math.cos(ANGLE) + dy * math.sin(ANGLE)) / a
    v = (-dx * math.sin(ANGLE) + dy * math.cos(ANGLE)) / b
    hu = np.full((SIZE, SIZE), LIVER_HU, dtype=np.int32)
    hu[u * u + v * v <= 1] = round(lesion.hu)
    return (hu + 1024).astype(np.uint16)


def axis_lines(lesion: Lesion) -> tuple[list[float], list[float]]:
    """SCOORD (column, row) end points of the long and short axis drawn across the lesion."""
    cx = cy = SIZE / 2
    long_px, short_px = _axes_px(lesion)
    lx, ly = math.cos(ANGLE) * long_px / 2, math.sin(ANGLE) * long_px / 2
    sx, sy = -math.sin(ANGLE) * short_px / 2, math.cos(ANGLE) * short_px / 2
    return [cx - lx, cy - ly, cx + lx, cy + ly], [cx - sx, cy - sy, cx + sx, cy + sy]


def ct_images(visit: Visit, extra: bool = False) -> list[Dataset]:
    """The measured slices (one per lesion), or with ``extra`` the liver-only slices too."""
    out = []
    slices: list[Lesion | None] = [*visit.lesions, *([None] * (visit.extra_slices if extra else 0))]
    for k, lesion in enumerate(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = uid(visit.patient_id, visit.name, "img", k)
        ds.StudyInstanceUID = visit.study_uid
        ds.SeriesInstanceUID = uid(visit.patient_id, visit.name, "ct-series")
        ds.FrameOfReferenceUID = uid(visit.patient_id, visit.name, "for")
        ds.PatientName = "Gist^Patient"
        ds.PatientID = visit.patient_id
        ds.PatientBirthDate = "19610203"
        ds.PatientSex = "F"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = visit.day.strftime("%Y%m%d")
        ds.StudyTime = "093000"
        if visit.contrast_timing:
            ds.ContrastBolusStartTime = "093500"
        ds.AcquisitionTime = ds.ContentTime = "093610"  # 70 s after the contrast start
        ds.AccessionNumber = f"{visit.name.upper()}{visit.patient_id}"[:16]
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.StudyDescription = visit.study_description
        ds.Modality = "CT"
        ds.BodyPartExamined = "ABDOMEN"
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = visit.series_description
        ds.SliceThickness = "2.5"
        ds.KVP = "120"
        ds.ContrastBolusAgent = "Iomeprol 350"
        ds.ContrastBolusRoute = "IV"
        ds.Manufacturer = "Test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Rows = ds.Columns = SIZE
        ds.PixelSpacing = [SPACING, SPACING]
        ds.ImagePositionPatient = [-64, -64, -40.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -40.0 * k
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 60, 400
        pixels = _pixels(lesion) if lesion is not None else np.full((SIZE, SIZE), LIVER_HU + 1024, np.uint16)
        ds.PixelData = pixels.tobytes()
        if visit.transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(visit.transfer_syntax, pixels)
        out.append(ds)
    return out


def _with_scoord(num: Dataset, points: list[float], image: Dataset) -> None:
    """Hang the axis line (SCOORD POLYLINE, INFERRED FROM) with its image under a NUM, as OHIF does."""
    scoord = hd.sr.ScoordContentItem(
        name=codes.DCM.ImageRegion,
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array(points, dtype=float).reshape(-1, 2),
        pixel_origin_interpretation=hd.sr.PixelOriginInterpretationValues.VOLUME,
        relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
    )
    scoord.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.ImageContentItem(
                name=codes.DCM.SourceImage,
                referenced_sop_class_uid=image.SOPClassUID,
                referenced_sop_instance_uid=image.SOPInstanceUID,
                relationship_type=hd.sr.RelationshipTypeValues.SELECTED_FROM,
            )
        ]
    )
    num.ContentSequence = [*getattr(num, "ContentSequence", []), scoord]


def measurement_sr(visit: Visit, images: list[Dataset], with_hu: bool) -> Dataset:
    groups = []
    for lesion, image in zip(visit.lesions, images, strict=True):
        long_line, _ = axis_lines(lesion)
        measurements = [
            hd.sr.Measurement(name=codes.SCT.LongAxis, value=lesion.long_mm, unit=MM),
            hd.sr.Measurement(name=codes.SCT.ShortAxis, value=lesion.short_mm, unit=MM),
        ]
        if with_hu:
            measurements.append(
                hd.sr.Measurement(
                    name=our.ATTENUATION_COEFFICIENT, value=lesion.hu, unit=HU, derivation=codes.SCT.Mean
                )
            )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=uid(visit.patient_id, lesion.tracking), identifier=lesion.identifier
                ),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=np.array(long_line, dtype=float).reshape(-1, 2),
                    source_image=hd.sr.SourceImageForRegion.from_source_image(image),
                ),
                finding_type=codes.SCT.Lesion,
                finding_sites=[
                    hd.sr.FindingSite(codes.SCT.Lung if lesion.organ == "lung" else codes.SCT.Liver)
                ],
                measurements=measurements,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^A"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=groups,
        title=our.ONCOLOGY_MEASUREMENT_REPORT,
    )
    # The axis lines under their NUMs (highdicom writes the group's region only).
    imaging = next(
        item for item in report[0].ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "126010"
    )
    for group_item, lesion, image in zip(imaging.ContentSequence, visit.lesions, images, strict=True):
        long_line, short_line = axis_lines(lesion)
        for item in group_item.ContentSequence:
            if item.get("ValueType") != "NUM":
                continue
            code = item.ConceptNameCodeSequence[0].CodeValue
            if code == codes.SCT.LongAxis.value:
                _with_scoord(item, long_line, image)
            elif code == codes.SCT.ShortAxis.value:
                _with_scoord(item, short_line, image)
    sr = hd.sr.ComprehensiveSR(
        evidence=images,
        content=report[0],
        series_instance_uid=uid(visit.patient_id, visit.name, "sr-series"),
        series_number=100,
        sop_instance_uid=uid(visit.patient_id, visit.name, "sr", with_hu),
        instance_number=1,
        manufacturer="Viewer",
        is_complete=True,
        is_verified=True,
        verifying_observer_name="Reader^A",
        verifying_organization="Hospital",
    )
    sr.ContentDate = visit.day.strftime("%Y%m%d")
    sr.ContentTime = "110000"
    return sr


def write_visit(directory: Path, visit: Visit, with_hu: bool) -> tuple[list[Path], Path]:
    """Save the visit's CT images and its measurement SR; returns (image paths, SR path)."""
    directory.mkdir(parents=True, exist_ok=True)
    images = ct_images(visit, extra=True)
    paths = []
    for ds in images:
        path = directory / f"{visit.patient_id}-{visit.name}-{ds.InstanceNumber}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    sr = measurement_sr(visit, images[: len(visit.lesions)], with_hu)
    sr_path = directory / f"{visit.patient_id}-{visit.name}-sr.dcm"
    sr.save_as(sr_path, enforce_file_format=True)
    return paths, sr_path
