"""The OHIF v3 measurement SRs of tests/data/ohif and the CT images they were drawn on.

The SRs were made by the OHIF writer itself (see tests/data/README.md); the images are made here from what
the SRs reference (study, series, SOP Instance UIDs in the evidence) with the geometry the annotations were
drawn on: axial 512 x 512 slices, 0.75 mm pixels, origin (-192, -192), 2.5 mm apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

OHIF_DIR = Path(__file__).resolve().parents[1] / "data" / "ohif"
SPACING = 0.75
ORIGIN = (-192.0, -192.0)
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime")
COPIED += ("AccessionNumber", "StudyID", "ReferringPhysicianName")


def ohif_sr(name: str) -> Path:
    path = OHIF_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"missing test data {path}")
    return path


def referenced_images(sr_path: Path, hu: int = 60) -> list[Dataset]:
    """One CT image per instance the SR's evidence lists, on the geometry the annotations were drawn on."""
    sr = pydicom.dcmread(sr_path)
    out: list[Dataset] = []
    for study in sr.CurrentRequestedProcedureEvidenceSequence:
        for series in study.ReferencedSeriesSequence:
            for n, ref in enumerate(series.ReferencedSOPSequence, start=1):
                ds = Dataset()
                ds.file_meta = FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
                ds.file_meta.MediaStorageSOPInstanceUID = ref.ReferencedSOPInstanceUID
                ds.SOPClassUID = CTImageStorage
                ds.SOPInstanceUID = ref.ReferencedSOPInstanceUID
                ds.StudyInstanceUID = study.StudyInstanceUID
                ds.SeriesInstanceUID = series.SeriesInstanceUID
                ds.FrameOfReferenceUID = f"{study.StudyInstanceUID}.9"
                for keyword in COPIED:
                    setattr(ds, keyword, sr.get(keyword, ""))
                ds.StudyDescription = "CT ABDOMEN LIVER"
                ds.Modality = "CT"
                ds.BodyPartExamined = "ABDOMEN"
                ds.SeriesNumber = 2
                ds.SeriesDescription = "PORTAL VENOUS 2.5mm"
                ds.InstanceNumber = n
                z = float(ref.ReferencedSOPInstanceUID.rsplit(".", 1)[1]) * 2.5
                ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], z]
                ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
                ds.SliceThickness = "2.5"
                ds.PixelSpacing = [SPACING, SPACING]
                ds.ContrastBolusAgent = "Iomeprol"
                ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
                ds.Manufacturer = "Test"
                ds.Rows = ds.Columns = 512
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.BitsAllocated = ds.BitsStored = 16
                ds.HighBit = 15
                ds.PixelRepresentation = 1
                ds.RescaleIntercept = -1024
                ds.RescaleSlope = 1
                ds.PixelData = np.full((512, 512), hu + 1024, dtype=np.int16).tobytes()
                out.append(ds)
    return out


def spool_ohif_patient(
    spool_root: Path, work: Path, held_images: tuple[str, ...], srs: tuple[str, ...]
) -> None:
    """File OHIF SRs, and the images of the SRs named in ``held_images``, into a spool (study/series/sop)."""
    from agent.dicom.spool import Spool

    spool = Spool(spool_root)
    spool.prepare()

    def put(ds: Dataset, data: bytes) -> None:
        target = spool.root / spool.relative_path(
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    for name in srs:
        path = ohif_sr(name)
        put(pydicom.dcmread(path, stop_before_pixels=True), path.read_bytes())
        if name in held_images:
            for image in referenced_images(path):
                out = work / f"{image.SOPInstanceUID}.dcm"
                image.save_as(out, enforce_file_format=True)
                put(image, out.read_bytes())


def run_pipeline(
    sessions: Any, settings: Any, spool_root: Path
) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """Index the spool, let every study become stable, run the worker until idle; per study UID: its state
    and the current output's detail (None when there is none)."""
    import json
    from datetime import UTC, datetime

    from sqlalchemy import select

    from agent.db.models import OutputVersion, Study
    from agent.dicom.reconcile import reconcile
    from agent.dicom.spool import Spool
    from agent.pipeline.stability import mark_stable
    from agent.pipeline.worker import Deps, Worker

    reconcile(Spool(spool_root), sessions.kw["bind"])
    mark_stable(sessions, 0, 0, now=datetime.now(UTC))
    worker = Worker(Deps(settings, sessions))
    while worker.run_one():
        pass
    out: dict[str, tuple[str, dict[str, Any] | None]] = {}
    with sessions() as s:
        for study in s.scalars(select(Study)):
            row = s.scalars(
                select(OutputVersion).where(
                    OutputVersion.study_pk == study.id, OutputVersion.current.is_(True)
                )
            ).one_or_none()
            out[study.study_uid] = (study.state, json.loads(row.detail) if row is not None else None)
    return out
