"""Synthetic DICOM studies for the tests, made with pydicom: small, deterministic, no files in the repo.

``make_study`` builds a follow-up liver study of three series: an uncompressed CT series (Explicit VR Little
Endian), an RLE-compressed CT series (stored as received, never decoded) and a Comprehensive SR with nested
content. The SR's sequences have defined lengths unless ``sr_undefined_lengths``: DCMTK's storescu re-encodes
undefined-length sequences with explicit lengths on the wire, so only defined lengths travel byte for byte.
``dataset_bytes`` returns the part of a DICOM file after its File Meta Information: what travels in a
C-STORE and what "byte-identical" compares.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComprehensiveSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RLELossless,
)

ROOT = "1.2.826.0.1.3680043.10.1447."


def uid(*parts: object) -> str:
    """A deterministic valid UID under a test root."""
    digest = int(hashlib.sha256(".".join(map(str, parts)).encode()).hexdigest()[:24], 16)
    return f"{ROOT}{digest}"


@dataclass
class Study:
    study_uid: str
    patient_name: str
    patient_id: str
    birth_date: str
    files: list[Path] = field(default_factory=list)
    series: dict[str, list[Path]] = field(default_factory=dict)


def _base(study: Study, series_uid: str, sop_class: str, sop_uid: str, modality: str, number: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240312"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC" + study.patient_id[-6:]
    ds.Modality = modality
    ds.StudyDescription = "CT ABDOMEN LIVER FOLLOW-UP"
    ds.SeriesDescription = f"series {number}"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.StudyID = "1"
    return ds


def _ct(study: Study, series_uid: str, index: int, number: int, size: int) -> Dataset:
    ds = _base(study, series_uid, CTImageStorage, uid(series_uid, index), "CT", number)
    ds.BodyPartExamined = "ABDOMEN"
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [0, 0, -5.0 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.8, 0.8]
    ds.SliceThickness = 5
    ds.KVP = 120
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(index + number * 1000)
    pixels = rng.integers(0, 4096, size=(size, size), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    return ds


def _sr(study: Study, series_uid: str, number: int, undefined_lengths: bool) -> Dataset:
    ds = _base(study, series_uid, ComprehensiveSRStorage, uid(series_uid, "sr"), "SR", number)
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate = "20240312"
    ds.ContentTime = "110000"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = (
        "126000",
        "DCM",
        "Imaging Measurement Report",
    )
    ds.ConceptNameCodeSequence = Sequence([title])
    items = []
    for i in range(3):
        concept = Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "G-D7FE", "SRT", "Long Axis"
        unit = Dataset()
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "mm", "UCUM", "millimeter"
        mv = Dataset()
        mv.NumericValue = f"{20 + i}.5"
        mv.MeasurementUnitsCodeSequence = Sequence([unit])
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "NUM"
        item.ConceptNameCodeSequence = Sequence([concept])
        item.MeasuredValueSequence = Sequence([mv])
        group = Dataset()
        group.RelationshipType = "CONTAINS"
        group.ValueType = "CONTAINER"
        group.ContinuityOfContent = "SEPARATE"
        group.ContentSequence = Sequence([item])
        items.append(group)
    ds.ContentSequence = Sequence(items)
    if not undefined_lengths:
        return ds
    # Undefined lengths, as many SR producers write them: sequences end with delimiters, not byte counts.
    ds["ContentSequence"].is_undefined_length = True
    for group in ds.ContentSequence:
        group.is_undefined_length_sequence_item = True
        group["ContentSequence"].is_undefined_length = True
    return ds


def save(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write ``ds`` as a DICOM file; sequences keep pydicom's undefined lengths."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = ROOT + "1"
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_study(
    directory: Path,
    *,
    key: str = "study",
    patient_name: str = "Testpatient^Alice",
    patient_id: str = "PID000001",
    birth_date: str = "19610214",
    ct_instances: int = 4,
    ct_size: int = 64,
    sr_undefined_lengths: bool = False,
) -> Study:
    """Three series (CT explicit LE, CT RLE Lossless, Comprehensive SR) written under ``directory``."""
    study = Study(uid(key, "study"), patient_name, patient_id, birth_date)
    plain, rle, sr = uid(key, "s1"), uid(key, "s2"), uid(key, "s3")
    for i in range(ct_instances):
        path = save(_ct(study, plain, i, 1, ct_size), directory / "s1" / f"ct{i:03d}.dcm")
        study.series.setdefault(plain, []).append(path)
    for i in range(ct_instances):
        ds = _ct(study, rle, i, 2, ct_size)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(RLELossless, encoding_plugin="pydicom")
        path = save(ds, directory / "s2" / f"rle{i:03d}.dcm", RLELossless)
        study.series.setdefault(rle, []).append(path)
    study.series[sr] = [save(_sr(study, sr, 3, sr_undefined_lengths), directory / "s3" / "sr.dcm")]
    study.files = [p for paths in study.series.values() for p in paths]
    return study


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a DICOM file after its preamble and File Meta Information group."""
    data = path.read_bytes()
    if data[128:132] != b"DICM":
        raise ValueError(f"{path}: not a DICOM file")
    group, elem, vr, _, length = struct.unpack_from("<HH2sHI", data, 132)
    if (group, elem, vr) != (2, 0, b"UL"):
        raise ValueError(f"{path}: no File Meta Information Group Length")
    return data[132 + 12 + length :]
