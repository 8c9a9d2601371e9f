"""The reader parses a file once and remembers it: same reports as a read of the caller's dataset, the
caller's dataset left as it was, highdicom's group classification without its getters, and the cache."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from agent.sr.read import ReportCache, SRReadError, SRReport, _classified_groups, read_sr
from tests.unit.sr.srgen import LesionSpec, uid, write_study_sr

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "sr"


def sample(prefix: str) -> Path:
    found = sorted(SAMPLES.glob(f"{prefix}_*.dcm"))
    assert found, prefix
    return found[0]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sr")
    lesions = [
        LesionSpec(f"liver lesion {j + 1}", uid("P9", "lesion", str(j)), long_mm=11.5 + j) for j in range(4)
    ]
    path, _ = write_study_sr(
        directory, "s0", patient_id="P9", study="P9-s0", study_date=date(2024, 2, 1), lesions=lesions
    )
    return path


def without_source(report: SRReport) -> SRReport:
    return replace(report, source=None)


def test_file_read_equals_dataset_read_and_leaves_the_callers_dataset_alone(generated: Path) -> None:
    ds = pydicom.dcmread(generated)
    from_file = read_sr(generated)
    from_dataset = read_sr(ds)
    assert from_file.reader == from_dataset.reader == "highdicom"
    assert len(from_file.groups) == 4 and all(len(g.measurements) >= 1 for g in from_file.groups)
    assert without_source(from_file) == from_dataset
    # highdicom parsed a copy of the caller's dataset, not the dataset itself.
    assert type(ds) is pydicom.FileDataset
    assert all(type(item) is Dataset for item in ds.ContentSequence)
    assert read_sr(ds) == from_dataset


@pytest.mark.parametrize("prefix", ["01", "02", "03", "04", "05", "06", "07", "08", "09", "15", "17"])
def test_samples_file_and_dataset_reads_agree(prefix: str) -> None:
    path = sample(prefix)
    from_file = read_sr(path)
    assert without_source(from_file) == read_sr(pydicom.dcmread(path))


def test_a_tree_highdicom_refuses_is_walked_as_stored() -> None:
    # 05: an empty NUM; highdicom refuses the tree after converting part of it in place.
    report = read_sr(sample("05"))
    assert report.reader == "walker"
    assert any("highdicom refused" in w for w in report.warnings)
    assert without_source(report) == read_sr(pydicom.dcmread(sample("05")))


@pytest.mark.parametrize("prefix", ["01", "02", "03", "06", "07", "08"])
def test_group_classification_is_that_of_highdicoms_getters(prefix: str) -> None:
    import highdicom as hd

    ds = pydicom.dcmread(sample(prefix))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    report = hd.sr.Comprehensive3DSR.from_dataset(ds, copy=False).content
    assert isinstance(report, hd.sr.MeasurementReport)
    ours = _classified_groups(report)
    theirs = [
        (template, g[0])
        for template, getter in (
            ("1410", report.get_planar_roi_measurement_groups),
            ("1411", report.get_volumetric_roi_measurement_groups),
            ("1501", report.get_image_measurement_groups),
        )
        for g in getter()
    ]
    assert ours and [t for t, _ in ours] == [t for t, _ in theirs]
    # The getters return deep copies: the same groups, equal item by item.
    assert all(a == b for (_, a), (_, b) in zip(ours, theirs, strict=True))


def test_cache_parses_a_file_once_under_any_name(generated: Path, tmp_path: Path) -> None:
    cache = ReportCache()
    first = read_sr(generated, cache=cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
    again = read_sr(generated, cache=cache)
    assert again is first and cache.hits == 1
    copy = tmp_path / "same.dcm"
    shutil.copyfile(generated, copy)
    renamed = read_sr(copy, cache=cache)
    assert renamed.source == str(copy) and without_source(renamed) == without_source(first)
    assert cache.hits == 2 and len(cache) == 1
    assert read_sr(generated) == first  # a cached report is the report of an uncached read


def test_cache_tells_changed_bytes_and_limits_apart(generated: Path, tmp_path: Path) -> None:
    cache = ReportCache()
    read_sr(generated, cache=cache)
    ds = pydicom.dcmread(generated)
    measurements = next(i for i in ds.ContentSequence if i.ValueType == "CONTAINER")
    measurements.ContentSequence.pop()  # one lesion less
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed)
    assert len(read_sr(changed, cache=cache).groups) == 3
    from agent.sr.read import Limits

    with pytest.raises(SRReadError, match="items"):
        read_sr(generated, cache=cache, limits=Limits(max_items=5))
    assert cache.misses == 3 and cache.hits == 0


def test_cache_remembers_an_unusable_file_and_is_bounded(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00")
    cache = ReportCache(max_entries=2)
    with pytest.raises(SRReadError) as first:
        read_sr(bad, cache=cache)
    other = tmp_path / "other.dcm"
    shutil.copyfile(bad, other)
    with pytest.raises(SRReadError) as again:
        read_sr(other, cache=cache)
    assert again.value.reason == first.value.reason and again.value.source == str(other)
    assert cache.hits == 1
    for k in range(3):
        (tmp_path / f"x{k}.dcm").write_bytes(b"not dicom %d" % k)
        with pytest.raises(SRReadError, match="not a DICOM file"):
            read_sr(tmp_path / f"x{k}.dcm", cache=cache)
    assert len(cache) == 2
    with pytest.raises(SRReadError, match="cannot open"):  # a missing file is not remembered
        read_sr(tmp_path / "missing.dcm", cache=cache)
    assert len(cache) == 2
