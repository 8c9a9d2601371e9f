"""The acquisition context of measured images: the index first, what was learned next, and what is asked for.

Real SQLite index (migrated), real files in a spool; the PACS side is exercised against Orthanc in
tests/integration/orthanc/test_choi_priors_in_pacs.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydicom.uid import JPEGLSLossless
from support.choigen import Lesion, Visit, ct_images, measurement_sr, write_visit

from agent.config import Settings
from agent.db import make_engine, session_factory, upgrade
from agent.db.index import RETRIEVED, InstanceRecord, record_instance
from agent.peers import Receiver
from agent.pipeline.acquisition import AcquisitionIndex, complete, measured_images, resolve
from agent.sr.context import DEFAULT_PHASE_RULES, SeriesInfo
from agent.sr.density import outline
from agent.sr.read import read_sr

T0 = datetime(2024, 3, 12, 10, 0, tzinfo=UTC)
LESIONS = (Lesion("liver seg 7", "L1", 40, 28, 62), Lesion("liver seg 4", "L2", 30, 22, 58))


@pytest.fixture
def sessions(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'agent.db'}")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def index_file(sessions, spool: Path, path: Path, origin: str = "routed") -> None:
    """File ``path`` into the spool and the index as the listener would."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    rel = Path(ds.StudyInstanceUID) / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    (spool / rel).parent.mkdir(parents=True, exist_ok=True)
    (spool / rel).write_bytes(path.read_bytes())
    record = InstanceRecord(
        patient_id=ds.PatientID, issuer_of_patient_id="", patient_name="Gist^Patient",
        patient_birth_date="19610203", study_uid=ds.StudyInstanceUID, study_date=ds.StudyDate,
        study_time="093000", accession_number="A1", study_description="CT", series_uid=ds.SeriesInstanceUID,
        modality=ds.Modality, series_number="3", series_description=str(ds.get("SeriesDescription", "")),
        body_part="ABDOMEN", sop_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID, instance_number="1", path=str(rel),
        size=path.stat().st_size, calling_aet="PACS", origin=origin,
    )  # fmt: skip
    with sessions.begin() as s:
        record_instance(s, record, T0)


def visit(name: str = "bl", **kw) -> Visit:
    return Visit("ACQ1", name, date(2024, 1, 10), "ABD PV 2.5mm", LESIONS, **kw)


def test_a_held_image_answers_from_its_own_header_and_is_measured(sessions, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    images, sr = write_visit(tmp_path / "in", visit(transfer_syntax=JPEGLSLossless), with_hu=False)
    for path in images:
        index_file(sessions, spool, path, origin=RETRIEVED)
    index = AcquisitionIndex(sessions, spool)
    report = read_sr(sr)
    group = report.groups[0]
    info = index(None, None, group.images[0].sop_instance_uid)
    assert info is not None and info.source == "retrieved"
    assert info.modality == "CT" and info.series_description == "ABD PV 2.5mm"
    assert (info.slice_thickness_mm, info.kvp, info.contrast_delay_s) == (Decimal("2.5"), 120, 70)
    assert info.pixel_spacing_mm == (Decimal("0.8"), Decimal("0.8"))
    where = outline(group)
    assert where is not None
    found = index.measure_density(where)
    assert abs(found.mean_hu - 62) <= 1 and index.pixel_reads == 1
    assert AcquisitionIndex(sessions, spool, density=False).image_path(where.sop_instance_uid) is None


def test_what_a_peer_said_is_kept_and_merged_series_and_instance(sessions, tmp_path: Path) -> None:
    index = AcquisitionIndex(sessions, tmp_path / "spool")
    assert index("1.2.3", "1.2.3.4", "1.2.3.4.5") is None
    series = SeriesInfo(study_uid="1.2.3", modality="CT", series_description="Abdomen", source="query")
    image = SeriesInfo(
        contrast_agent="Iomeprol",
        slice_thickness_mm=Decimal("2.5"),
        pixel_spacing_mm=(Decimal("0.7"), Decimal("0.7")),
        contrast_delay_s=Decimal("72"),
        source="query",
    )
    index.learn([("1.2.3.4", "", series), ("1.2.3.4", "1.2.3.4.5", image)], "pacs")
    # A new run (a new index object) finds it without asking anyone.
    again = AcquisitionIndex(sessions, tmp_path / "spool")
    info = again(None, "1.2.3.4", "1.2.3.4.5")
    assert info is not None and info.source == "query"
    assert (info.modality, info.series_description, info.contrast_agent) == ("CT", "Abdomen", "Iomeprol")
    assert info.contrast_delay_s == 72 and info.pixel_spacing_mm == (Decimal("0.7"), Decimal("0.7"))
    assert complete(info, DEFAULT_PHASE_RULES)  # "Abdomen" says nothing, the 72 s delay says portal venous
    assert not complete(replace(info, contrast_delay_s=None), DEFAULT_PHASE_RULES)
    assert not complete(replace(info, slice_thickness_mm=None), DEFAULT_PHASE_RULES)
    # Learning again updates the row instead of adding one.
    index.learn([("1.2.3.4", "", replace(series, series_description="Abdomen PV"))], "pacs")
    info = AcquisitionIndex(sessions, tmp_path / "spool")(None, "1.2.3.4", "1.2.3.4.5")
    assert info is not None and info.series_description == "Abdomen PV"


def test_pixels_are_wanted_only_where_the_sr_gives_no_attenuation(tmp_path: Path) -> None:
    images = ct_images(visit())
    without = measured_images([read_sr_of(tmp_path, images, False)], density=True)
    with_hu = measured_images([read_sr_of(tmp_path, images, True)], density=True)
    assert {m.sop_uid for m in without} == {str(ds.SOPInstanceUID) for ds in images}
    assert all(m.pixels for m in without) and not any(m.pixels for m in with_hu)
    assert all(m.series_uid == images[0].SeriesInstanceUID for m in without)
    assert not any(m.pixels for m in measured_images([read_sr_of(tmp_path, images, False)], density=False))


def read_sr_of(tmp_path: Path, images, with_hu: bool):
    path = tmp_path / f"sr-{with_hu}.dcm"
    measurement_sr(visit(), images, with_hu).save_as(path, enforce_file_format=True)
    return read_sr(path)


def test_all_held_asks_nobody_and_no_peer_is_said(sessions, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    images, sr = write_visit(tmp_path / "in", visit(), with_hu=False)
    report = read_sr(sr)
    settings = Settings()
    out = resolve(
        AcquisitionIndex(sessions, spool), [report], settings, Receiver("LIVERAGENT"), DEFAULT_PHASE_RULES
    )
    # Nothing held, no query/retrieve peer: the images stay unknown and the result says so.
    assert out.images == 2 and out.local == 0 and out.queried == 0
    assert out.warnings == ["2 measured image(s) not held and no query/retrieve peer configured"]
    for path in images:
        index_file(sessions, spool, path)
    out = resolve(
        AcquisitionIndex(sessions, spool), [report], settings, Receiver("LIVERAGENT"), DEFAULT_PHASE_RULES
    )
    assert (out.images, out.local, out.warnings) == (2, 2, [])


def test_sr_assess_measures_hu_on_the_given_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``liver-agent sr assess --images``: the same density from the pixels as the service."""
    import json

    from agent import cli

    days = {"bl": date(2024, 1, 10), "fu": date(2024, 3, 20)}
    hu = {"bl": (62, 58), "fu": (40, 38)}
    srs, cts = [], []
    for name, day in days.items():
        lesions = tuple(replace(les, hu=h) for les, h in zip(LESIONS, hu[name], strict=True))
        images, sr = write_visit(tmp_path / name, Visit("ACQCLI", name, day, "ABD PV", lesions), False)
        srs.append(sr)
        cts += images
    out = tmp_path / "out.dcm"
    argv = ["sr", "assess", *map(str, srs), "--out", str(out), "--json", "--images", *map(str, cts)]
    assert (
        cli.main([*argv, "--primary", "GIST", "--therapy", "imatinib", "--criteria", "RECIST1.1,Choi"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    choi = result["choi"]
    assert choi["timepoint_responses"][-1] == "PR", choi
    assert result["recist"]["timepoint_responses"][-1] == "SD"  # no size change: Choi PR by density alone
    assert "mean HU computed by liver-agent" in out.read_bytes().decode("utf-8", "replace")
