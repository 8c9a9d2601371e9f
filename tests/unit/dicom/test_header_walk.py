"""Reading identifying attributes from encoded bytes, and proving the bytes are complete."""

from __future__ import annotations

import zlib
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from support.dicomgen import dataset_bytes, make_study

from agent.dicom.header import HeaderError, read_identity


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return make_study(
        tmp_path_factory.mktemp("study"),
        patient_name="Müller^Jörg",
        ct_instances=2,
        ct_size=16,
        sr_undefined_lengths=True,
    )


def _reencode(path: Path, transfer_syntax: str, out: Path) -> Path:
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(out, enforce_file_format=True)
    return out


def _ts(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def test_identity_matches_pydicom_for_every_file(study) -> None:
    for path in study.files:
        ident = read_identity(dataset_bytes(path), _ts(path))
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ident.sop_instance_uid == ds.SOPInstanceUID
        assert ident.sop_class_uid == ds.SOPClassUID
        assert ident.study_uid == ds.StudyInstanceUID == study.study_uid
        assert ident.series_uid == ds.SeriesInstanceUID
        assert ident.patient_id == "PID000001"
        assert ident.patient_name == "Müller^Jörg"  # decoded with Specific Character Set ISO_IR 100
        assert ident.modality == ds.Modality
        assert ident.instance_number == str(ds.InstanceNumber)


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_sr_with_undefined_lengths_in_both_vr_encodings(study, tmp_path: Path, ts: str) -> None:
    sr = _reencode(study.files[-1], ts, tmp_path / "sr.dcm")
    data = dataset_bytes(sr)
    assert b"\xfe\xff\xdd\xe0" in data  # a sequence delimiter: undefined lengths are exercised
    assert read_identity(data, ts).sop_instance_uid == pydicom.dcmread(sr).SOPInstanceUID


def test_deflated_dataset_is_inflated(study, tmp_path: Path) -> None:
    path = _reencode(study.files[0], DeflatedExplicitVRLittleEndian, tmp_path / "d.dcm")
    data = dataset_bytes(path)
    assert read_identity(data, DeflatedExplicitVRLittleEndian).patient_id == "PID000001"
    with pytest.raises(HeaderError):
        read_identity(data[: len(data) // 2], DeflatedExplicitVRLittleEndian)
    with pytest.raises(HeaderError):
        read_identity(zlib.compress(b"garbage")[:5], DeflatedExplicitVRLittleEndian)


def _top_level_boundaries(data: bytes, implicit: bool) -> set[int]:
    fp = BytesIO(data)
    ends = set()
    for _ in data_element_generator(fp, implicit, True):
        ends.add(fp.tell())
    return ends


def test_every_truncation_inside_an_element_is_detected(study) -> None:
    # Uncompressed CT, RLE-encapsulated CT and the SR: cut at many points. A cut exactly between two
    # top-level elements leaves a shorter but well-formed dataset; every other cut must be refused.
    for path in (study.files[0], study.files[2], study.files[-1]):
        data = dataset_bytes(path)
        ts = _ts(path)
        boundaries = _top_level_boundaries(data, ts == ImplicitVRLittleEndian)
        step = max(1, len(data) // 300)
        refused = 0
        for cut in [*range(1, len(data), step), len(data) - 1, len(data) - 2]:
            if cut in boundaries:
                continue
            with pytest.raises(HeaderError):
                read_identity(data[:cut], ts)
            refused += 1
        assert refused > 100


def test_garbage_is_refused() -> None:
    with pytest.raises(HeaderError):
        read_identity(b"\x08\x00\x18\x00\x01\x02\x04\x00abcd", ExplicitVRLittleEndian)  # no VR
    with pytest.raises(HeaderError):  # elements out of order
        read_identity(b"\x10\x00\x10\x00PN\x02\x00AB\x08\x00\x18\x00UI\x02\x001\x00", ExplicitVRLittleEndian)
    with pytest.raises(HeaderError):
        read_identity(b"not dicom at all, just text", ExplicitVRLittleEndian)


def test_missing_attributes_are_none(tmp_path: Path) -> None:
    ds = pydicom.Dataset()
    ds.SOPInstanceUID = "1.2.3"
    buf = DicomBytesIO()
    buf.is_implicit_VR, buf.is_little_endian = True, True
    pydicom.filewriter.write_dataset(buf, ds)
    ident = read_identity(buf.getvalue(), ImplicitVRLittleEndian)
    assert ident.sop_instance_uid == "1.2.3"
    assert ident.study_uid is None and ident.patient_id is None


def test_a_deflated_instance_is_read_without_inflating_it_whole(study, tmp_path: Path) -> None:
    """64 MB of pixel data deflate to a few dozen kB; reading the header never holds the inflated bytes."""
    import tracemalloc

    ds = pydicom.dcmread(study.files[0])
    ds.Rows, ds.Columns = 4096, 8192
    ds.PixelData = bytes(4096 * 8192 * 2)
    path = tmp_path / "big-deflated.dcm"
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    data = dataset_bytes(path)
    assert len(data) < 1 << 20
    tracemalloc.start()
    try:
        ident = read_identity(data, DeflatedExplicitVRLittleEndian)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ident.patient_id == "PID000001" and ident.sop_instance_uid == ds.SOPInstanceUID
    assert peak < 4 << 20, f"peak {peak / 1e6:.1f} MB while reading a 64 MB deflated instance"
    with pytest.raises(HeaderError, match="truncated"):
        read_identity(data[: len(data) - 100], DeflatedExplicitVRLittleEndian)
