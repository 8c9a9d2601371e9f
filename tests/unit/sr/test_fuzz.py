"""Fuzzing the reader: random content trees never raise anything but SRReadError, never hang or blow up."""

from __future__ import annotations

import io
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from agent.sr.context import study_context
from agent.sr.observations import observations
from agent.sr.read import Limits, SRReadError, read_sr

SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.88.11",
    "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.34",
]
NAMES = [
    ("126000", "DCM"),
    ("126010", "DCM"),
    ("125007", "DCM"),
    ("112039", "DCM"),
    ("112040", "DCM"),
    ("121071", "DCM"),
    ("363698007", "SCT"),
    ("G-C0E3", "SRT"),
    ("103339001", "SCT"),
    ("G-A185", "SRT"),
    ("103340004", "SCT"),
    ("112031", "DCM"),
    ("121401", "DCM"),
    ("126073", "DCM"),
    ("112016", "DCM"),
    ("111028", "DCM"),
    ("zzz015", "99NCIAIM"),
]
UNITS = ["mm", "cm", "um", "px", "1", "[hnsf'U]", "mm2", "ml", "", "zz"]
VALUE_TYPES = ["CONTAINER", "NUM", "TEXT", "CODE", "UIDREF", "IMAGE", "SCOORD", "SCOORD3D", "PNAME", "BOGUS"]
RELS = ["CONTAINS", "HAS OBS CONTEXT", "HAS CONCEPT MOD", "INFERRED FROM", "HAS PROPERTIES", "SELECTED FROM"]


def code(value: str, scheme: str) -> Dataset:
    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = "x"
    return c


@st.composite
def items(draw: Any, depth: int = 0) -> Dataset:
    item = Dataset()
    vt = draw(st.sampled_from(VALUE_TYPES))
    item.ValueType = vt
    item.RelationshipType = draw(st.sampled_from(RELS))
    if draw(st.booleans()):
        item.ConceptNameCodeSequence = [code(*draw(st.sampled_from(NAMES)))]
    if vt == "NUM" and draw(st.booleans()):
        mv = Dataset()
        # Wrong value types on purpose: text under a UT VR, huge, empty, a sequence where a number belongs.
        raw = draw(st.sampled_from(["12.5", "-3", "1e308", "", "nan", "abc", "7", "seq"]))
        if raw == "seq":
            mv.add(DataElement(0x0040A30A, "SQ", [Dataset()]))
        elif raw in ("abc", "nan"):
            mv.add(DataElement(0x0040A30A, "UT", raw))
        else:
            mv.NumericValue = raw
        if draw(st.booleans()):
            mv.MeasurementUnitsCodeSequence = [code(draw(st.sampled_from(UNITS)) or "mm", "UCUM")]
        item.MeasuredValueSequence = [mv]
    elif vt == "TEXT":
        item.TextValue = draw(st.text(max_size=20))
    elif vt == "UIDREF":
        item.UID = draw(st.sampled_from(["1.2.3", "0", "lesion-1", "2.25.1"]))
    elif vt == "CODE" and draw(st.booleans()):
        item.ConceptCodeSequence = [code(*draw(st.sampled_from(NAMES)))]
    elif vt in ("SCOORD", "SCOORD3D"):
        item.GraphicType = draw(st.sampled_from(["POINT", "POLYLINE", "CIRCLE"]))
        item.GraphicData = draw(st.lists(st.floats(-1e3, 1e3), max_size=6))
    elif vt == "IMAGE" and draw(st.booleans()):
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ref.ReferencedSOPInstanceUID = "1.2.3.4"
        item.ReferencedSOPSequence = [ref]
    if draw(st.booleans()):
        item.ReferencedContentItemIdentifier = [1, 2, 1]  # by-reference item (never followed)
    if depth < 4 and draw(st.booleans()):
        item.ContentSequence = draw(st.lists(items(depth + 1), max_size=4))
    return item


def document(root_children: list[Dataset], sop_class: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.1"
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [code("126000", "DCM")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = root_children
    return ds


def read_everything(ds: Dataset, limits: Limits | None = None) -> None:
    try:
        report = read_sr(ds, limits=limits)
    except SRReadError:
        return
    study_context(report)
    observations(report)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(items(), max_size=5), st.sampled_from(SOP_CLASSES))
def test_random_trees_raise_only_srreaderror(children: list[Dataset], sop_class: str) -> None:
    read_everything(document(children, sop_class))


@settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(items(), max_size=4), st.sampled_from(SOP_CLASSES), st.binary(max_size=64), st.integers(0, 400)
)
def test_random_bytes_in_a_file_raise_only_srreaderror(
    children: list[Dataset], sop_class: str, junk: bytes, cut: int
) -> None:
    ds = document(children, sop_class)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    try:
        pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    except Exception:
        return  # hypothesis produced something pydicom itself cannot write
    data = buf.getvalue()
    corrupted = data[: max(0, len(data) - cut)] + junk
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.dcm"
        path.write_bytes(corrupted)
        try:
            report = read_sr(path)
        except SRReadError:
            return
        study_context(report)
        observations(report)


def test_corrupt_files_on_disk(tmp_path: Any) -> None:
    for i, payload in enumerate([b"", b"DICM", b"\x00" * 132 + b"DICM" + b"\xff" * 50, b"not dicom at all"]):
        p = tmp_path / f"{i}.dcm"
        p.write_bytes(payload)
        with pytest.raises(SRReadError):
            read_sr(p)


def test_cycle_of_items_terminates() -> None:
    a = Dataset()
    a.ValueType = "CONTAINER"
    a.RelationshipType = "CONTAINS"
    a.ConceptNameCodeSequence = [code("125007", "DCM")]
    a.ContentSequence = [a]  # an in-memory cycle: the item contains itself
    started = time.monotonic()
    with pytest.raises(SRReadError, match=r"deeper|more than"):
        read_sr(document([a], SOP_CLASSES[2]))
    assert time.monotonic() - started < 5


def test_deep_nesting_is_refused_early() -> None:
    leaf = Dataset()
    leaf.ValueType = "CONTAINER"
    root = leaf
    for _ in range(5000):
        parent = Dataset()
        parent.ValueType = "CONTAINER"
        parent.RelationshipType = "CONTAINS"
        parent.ContentSequence = [root]
        root = parent
    with pytest.raises(SRReadError, match="deeper than 48"):
        read_sr(document([root], SOP_CLASSES[2]))


def test_wide_trees_are_bounded_in_items_and_memory() -> None:
    num = Dataset()
    num.ValueType = "NUM"
    num.RelationshipType = "CONTAINS"
    num.ConceptNameCodeSequence = [code("103339001", "SCT")]
    wide = Dataset()
    wide.ValueType = "CONTAINER"
    wide.RelationshipType = "CONTAINS"
    wide.ContentSequence = [num] * 50_000
    tracemalloc.start()
    try:
        with pytest.raises(SRReadError, match="more than 20000 items"):
            read_sr(document([wide], SOP_CLASSES[2]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024


def test_tight_limits_are_honoured() -> None:
    num = Dataset()
    num.ValueType = "NUM"
    num.RelationshipType = "CONTAINS"
    with pytest.raises(SRReadError, match="more than 3 items"):
        read_sr(document([num] * 5, SOP_CLASSES[2]), limits=Limits(max_items=3))
