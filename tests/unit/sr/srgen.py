"""Longitudinal TID 1500 fixtures written with highdicom (no files in the repository).

``LesionSpec`` describes one measurement group; ``write_study_sr`` writes one small CT image per study and a
Comprehensive SR measuring it, like a viewer at a follow-up read would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from agent.sr import codes as our

ROOT = "1.2.826.0.1.3680043.10.1447.4."
MM = hd.sr.CodedConcept("mm", "UCUM", "millimeter")


def uid(*parts: object) -> str:
    digest = int(hashlib.sha256(".".join(map(str, parts)).encode()).hexdigest()[:24], 16)
    return f"{ROOT}{digest}"


@dataclass(frozen=True)
class LesionSpec:
    identifier: str | None
    tracking_uid: str | None  # None: the group is written without a Tracking UID
    site: object = codes.SCT.Liver
    long_mm: float | None = None
    short_mm: float | None = None
    mean_hu: float | None = None
    node: bool = False
    baseline_category: object | None = None  # e.g. our.TARGET_LESION_AT_BASELINE
    role: object | None = None  # e.g. our.ROLE_NEW
    position: tuple[float, float, float] | None = None  # SCOORD3D point instead of a 2D polyline


def ct_image(
    patient_id: str, study: str, study_date: date, description: str = "Portal venous 70s"
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid(study, "img")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = uid(study)
    ds.SeriesInstanceUID = uid(study, "series")
    ds.FrameOfReferenceUID = uid(patient_id, "for")
    ds.PatientName = "Test^Patient"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = "090000"
    ds.AccessionNumber = study[:16]
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = description
    ds.SliceThickness = "2.5"
    ds.ContrastBolusAgent = "Iomeprol"
    ds.Manufacturer = "Test"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 8
    ds.PixelSpacing = [1, 1]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = np.zeros((8, 8), dtype=np.int16).tobytes()
    return ds


def _group(spec: LesionSpec, image: Dataset) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    measurements = []
    if spec.long_mm is not None:
        measurements.append(hd.sr.Measurement(name=codes.SCT.LongAxis, value=spec.long_mm, unit=MM))
    if spec.short_mm is not None:
        measurements.append(hd.sr.Measurement(name=codes.SCT.ShortAxis, value=spec.short_mm, unit=MM))
    if spec.mean_hu is not None:
        measurements.append(
            hd.sr.Measurement(
                name=our.ATTENUATION_COEFFICIENT,
                value=spec.mean_hu,
                unit=hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit"),
                derivation=codes.SCT.Mean,
            )
        )
    evaluations = []
    if spec.baseline_category is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(our.BASELINE_CATEGORY, spec.baseline_category))
    if spec.role is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(our.LESION_ROLE, spec.role))
    region: hd.sr.ImageRegion | hd.sr.ImageRegion3D
    if spec.position is not None:
        region = hd.sr.ImageRegion3D(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.array([spec.position], dtype=float),
            frame_of_reference_uid=image.FrameOfReferenceUID,
        )
    else:
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[1.0, 1.0], [5.0, 5.0]]),
            source_image=hd.sr.SourceImageForRegion.from_source_image(image),
        )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=spec.tracking_uid or uid("x"), identifier=spec.identifier
        ),
        referenced_region=region,
        finding_type=codes.SCT.LymphNode if spec.node else codes.SCT.Lesion,
        finding_sites=[hd.sr.FindingSite(spec.site)],
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )


def write_study_sr(
    directory: Path,
    name: str,
    *,
    patient_id: str,
    study: str,
    study_date: date,
    lesions: list[LesionSpec],
    complete: bool = True,
    verified: bool = True,
    content_time: str = "120000",
    previous: list[Dataset] | None = None,
    description: str = "Portal venous 70s",
) -> tuple[Path, Dataset]:
    image = ct_image(patient_id, study, study_date, description)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^A"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=[_group(spec, image) for spec in lesions],
        title=our.ONCOLOGY_MEASUREMENT_REPORT,
    )
    sop_class = hd.sr.Comprehensive3DSR if any(s.position for s in lesions) else hd.sr.ComprehensiveSR
    sr = sop_class(
        evidence=[image],
        content=report[0],
        series_instance_uid=uid(study, name, "sr-series"),
        series_number=100,
        sop_instance_uid=uid(study, name, "sr"),
        instance_number=1,
        manufacturer="Viewer",
        is_complete=complete,
        is_verified=verified,
        verifying_observer_name="Reader^A" if verified else None,
        verifying_organization="Hospital" if verified else None,
        previous_versions=previous,
    )
    sr.ContentDate = study_date.strftime("%Y%m%d")
    sr.ContentTime = content_time
    # Groups specified without a Tracking UID lose it (highdicom always writes one).
    without_uid = {s.identifier for s in lesions if s.tracking_uid is None}
    for container in sr.ContentSequence:
        for g in getattr(container, "ContentSequence", []):
            items = list(getattr(g, "ContentSequence", []))
            ident = next(
                (i.TextValue for i in items if i.ConceptNameCodeSequence[0].CodeValue == "112039"), None
            )
            if ident in without_uid:
                g.ContentSequence = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue != "112040"]
    path = directory / f"{name}.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path, sr
