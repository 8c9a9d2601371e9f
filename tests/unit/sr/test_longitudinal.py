"""Baseline + two follow-ups written with highdicom -> one timeline -> RECIST through the response core.

Patient P1 (CRC). Baseline targets by inference (largest first, 2 per organ): liver 50 and 30, lung 20,
node 18 (short axis), adrenal 12 (no Tracking UID: linked by its identifier text); liver 20 is the third liver
lesion, so a non-target. Follow-up 1: the 30 mm liver lesion is split in two fragments (one Tracking UID).
Follow-up 2 has two SRs: a draft with wrong values, and the verified correction naming it as predecessor;
a lesion never seen before appears (a new-lesion candidate).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pydicom.sr.codedict import codes

from agent.pipeline.assemble import read_reports
from agent.pipeline.tracking import build_timeline, timeline_to_dict
from agent.response.model import Context, LesionKind, LesionStatus
from agent.response.parse import timeline_from_dict
from agent.sr import codes as our
from agent.sr.read import read_sr
from tests.unit.sr.srgen import LesionSpec, uid, write_study_sr

P = "P1"
U = {name: uid(P, name) for name in ("liver1", "liver2", "liver3", "lung", "node", "newliver")}
ADRENAL = codes.SCT.AdrenalGland if hasattr(codes.SCT, "AdrenalGland") else our.ORGANS[3][0]


def baseline() -> list[LesionSpec]:
    return [
        LesionSpec("liver seg VII", U["liver1"], long_mm=50, short_mm=40, mean_hu=80),
        LesionSpec("liver seg IV", U["liver2"], long_mm=30),
        LesionSpec("liver seg II", U["liver3"], long_mm=20),
        LesionSpec("lung RUL", U["lung"], site=codes.SCT.Lung, long_mm=20),
        LesionSpec("node hilar", U["node"], site=codes.SCT.LymphNode, long_mm=25, short_mm=18, node=True),
        LesionSpec("adrenal left", None, site=ADRENAL, long_mm=12),
    ]


def follow_up_1() -> list[LesionSpec]:
    return [
        LesionSpec("liver seg VII", U["liver1"], long_mm=35, short_mm=30, mean_hu=60),
        LesionSpec("liver seg IV a", U["liver2"], long_mm=12),
        LesionSpec("liver seg IV b", U["liver2"], long_mm=9),
        LesionSpec("liver seg II", U["liver3"], long_mm=18),
        LesionSpec("lung RUL", U["lung"], site=codes.SCT.Lung, long_mm=14),
        LesionSpec("node hilar", U["node"], site=codes.SCT.LymphNode, long_mm=12, short_mm=9, node=True),
        LesionSpec("adrenal left", None, site=ADRENAL, long_mm=8),
    ]


def follow_up_2(liver1: float) -> list[LesionSpec]:
    return [
        LesionSpec("liver seg VII", U["liver1"], long_mm=liver1, short_mm=30, mean_hu=62),
        LesionSpec("liver seg IV a", U["liver2"], long_mm=12),
        LesionSpec("liver seg IV b", U["liver2"], long_mm=10),
        LesionSpec("liver seg II", U["liver3"], long_mm=18),
        LesionSpec("lung RUL", U["lung"], site=codes.SCT.Lung, long_mm=15),
        LesionSpec("node hilar", U["node"], site=codes.SCT.LymphNode, long_mm=12, short_mm=10, node=True),
        LesionSpec("adrenal left", None, site=ADRENAL, long_mm=9),
        LesionSpec("liver seg VI", U["newliver"], long_mm=15),
    ]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("srs")
    bl, _ = write_study_sr(d, "bl", patient_id=P, study="bl", study_date=date(2024, 1, 8), lesions=baseline())
    fu1, _ = write_study_sr(
        d, "fu1", patient_id=P, study="fu1", study_date=date(2024, 3, 4), lesions=follow_up_1()
    )
    draft, draft_ds = write_study_sr(
        d,
        "fu2-draft",
        patient_id=P,
        study="fu2",
        study_date=date(2024, 5, 6),
        lesions=follow_up_2(liver1=60),
        complete=False,
        verified=False,
        content_time="100000",
    )
    final, _ = write_study_sr(
        d,
        "fu2-final",
        patient_id=P,
        study="fu2",
        study_date=date(2024, 5, 6),
        lesions=follow_up_2(liver1=36),
        content_time="090000",  # older clock, but it names the draft as its predecessor
        previous=[draft_ds],
    )
    # Any order on the command line.
    return [final, fu1, draft, bl]


def tracked(files: list[Path]):  # type: ignore[no-untyped-def]
    usable, failures, _ = read_reports([str(f) for f in files])
    assert not failures
    return build_timeline(usable, Context(date(2024, 1, 15), "CRC", ("FOLFOX",)))


def test_group_without_uid_keeps_its_identifier_text(files: list[Path]) -> None:
    bl = next(f for f in files if f.name == "bl.dcm")
    report = read_sr(bl)
    adrenal = next(g for g in report.groups if g.tracking_identifier == "adrenal left")
    assert adrenal.tracking_uid is None
    assert [m.value for m in adrenal.measurements] == [12]


def test_timeline_shape_roles_links_split_and_superseded(files: list[Path]) -> None:
    t = tracked(files)
    assert [tp.timepoint.date for tp in t.timepoints] == [
        date(2024, 1, 8),
        date(2024, 3, 4),
        date(2024, 5, 6),
    ]
    base = {tl.lesion.id: tl.lesion for tl in t.timepoints[0].lesions}
    targets = sorted(i for i, lesion in base.items() if lesion.kind is LesionKind.TARGET)
    assert targets == sorted(["liver seg VII", "liver seg IV", "lung RUL", "node hilar", "adrenal left"])
    assert base["liver seg II"].kind is LesionKind.NON_TARGET
    assert base["node hilar"].is_node and base["node hilar"].organ == "lymph_node"
    assert base["adrenal left"].organ == "adrenal"
    assert base["liver seg VII"].mean_hu == 80
    bl_notes = next(tl.notes for tl in t.timepoints[0].lesions if tl.lesion.id == "liver seg II")
    assert any("role inferred: non-target" in n and "2 per organ" in n for n in bl_notes)

    fu1 = {tl.lesion.id: tl for tl in t.timepoints[1].lesions}
    assert set(fu1) == set(base)  # every lesion linked, including the one without a Tracking UID
    assert fu1["liver seg IV"].lesion.fragments_mm == (Decimal(12), Decimal(9))
    assert fu1["adrenal left"].lesion.long_axis_mm == 8
    assert any("Tracking Identifier text" in n for n in fu1["adrenal left"].notes)
    assert fu1["node hilar"].lesion.short_axis_mm == 9

    fu2 = t.timepoints[2]
    assert fu2.report.report.source is not None and fu2.report.report.source.endswith("fu2-final.dcm")
    assert [str(s.report.source) for s in fu2.superseded] == [str(files[2])]
    lesions = {tl.lesion.id: tl for tl in fu2.lesions}
    assert lesions["liver seg VII"].lesion.long_axis_mm == 36  # not the draft's 60
    new = lesions["liver seg VI"]
    assert new.lesion.kind is LesionKind.NEW and new.lesion.status is LesionStatus.EQUIVOCAL
    assert any("new-lesion candidate" in n for n in new.notes)
    assert t.alerts == []


def test_round_trip_through_json_and_recist(files: list[Path]) -> None:
    from agent.response.table import assess_timeline

    data = timeline_to_dict(tracked(files))
    text = json.dumps(data)
    timeline = timeline_from_dict(json.loads(text))
    assert [len(tp.lesions) for tp in timeline.timepoints] == [6, 6, 7]
    assessment = assess_timeline(timeline)
    recist = assessment.get(timeline.context.criteria[0])
    assert recist is not None
    sums = [tp.sum_mm if tp else None for tp in recist.timepoints]
    # Baseline 50+30+20+18+12 = 130; FU1 35+(12+9)+14+9+8 = 87 (-33 %: PR);
    # FU2 36+(12+10)+15+10+9 = 92: -29.2 % vs baseline, +5.7 % vs nadir (not PD): PR persists once
    # reached (docs/criteria.md §2.6, EORTC FAQ default); the equivocal new lesion is not PD.
    assert recist.baseline_sum_mm == 130
    assert sums[1:] == [Decimal(87), Decimal(92)]
    assert [c.value if c else None for c in recist.categories()] == [None, "PR", "PR"]
    assert recist.bor.value == "PR"
    codes_at = {(a.code, a.timepoint) for a in assessment.alerts}
    assert ("NEW_LESION_EQUIVOCAL", 2) in codes_at


def test_ambiguous_identifier_text_is_left_unlinked(tmp_path: Path) -> None:
    # Baseline: two lesions, distinct identifiers, no UIDs. Follow-up: both groups carry the same text.
    bl, _ = write_study_sr(
        tmp_path,
        "bl",
        patient_id="P2",
        study="p2bl",
        study_date=date(2024, 1, 1),
        lesions=[LesionSpec("A", None, long_mm=30), LesionSpec("B", None, long_mm=25)],
    )
    fu, _ = write_study_sr(
        tmp_path,
        "fu",
        patient_id="P2",
        study="p2fu",
        study_date=date(2024, 3, 1),
        lesions=[LesionSpec("A", None, long_mm=28), LesionSpec("A", None, long_mm=20)],
    )
    usable, _, _ = read_reports([str(bl), str(fu)])
    t = build_timeline(usable)
    ids = [tl.lesion.id for tl in t.timepoints[1].lesions]
    assert "A" not in ids and "B" not in ids  # nothing guessed
    assert not t.alerts  # repeated text is not an identity at all: both are new-lesion candidates
    assert all(tl.lesion.kind is LesionKind.NEW for tl in t.timepoints[1].lesions)


def test_location_linking_when_configured_and_ambiguity_raises_mismatch(tmp_path: Path) -> None:
    bl, _ = write_study_sr(
        tmp_path,
        "bl",
        patient_id="P3",
        study="p3bl",
        study_date=date(2024, 1, 1),
        lesions=[
            LesionSpec("one", uid("P3", "1"), long_mm=30, position=(10.0, 10.0, 10.0)),
            LesionSpec("two", uid("P3", "2"), long_mm=25, position=(16.0, 10.0, 10.0)),
        ],
    )
    fu, _ = write_study_sr(
        tmp_path,
        "fu",
        patient_id="P3",
        study="p3fu",
        study_date=date(2024, 3, 1),
        lesions=[
            LesionSpec("x", uid("P3", "x"), long_mm=28, position=(11.0, 10.0, 10.0)),
            LesionSpec("y", uid("P3", "y"), long_mm=22, position=(13.0, 10.0, 10.0)),
        ],
    )
    usable, _, _ = read_reports([str(bl), str(fu)])
    unlinked = build_timeline(usable)  # location linking off by default
    assert {tl.lesion.id for tl in unlinked.timepoints[1].lesions} == {"x", "y"}
    linked = build_timeline(usable, link_distance_mm=2.5)
    fu_lesions = {tl.lesion.id: tl for tl in linked.timepoints[1].lesions}
    assert "one" in fu_lesions and fu_lesions["one"].lesion.long_axis_mm == 28
    assert "y" in fu_lesions  # 3 mm from both 'one' and 'two'... within 2.5 of neither
    wide = build_timeline(usable, link_distance_mm=10)
    assert [a.code for a in wide.alerts] and all(a.code == "LESION_TRACKING_MISMATCH" for a in wide.alerts)


def test_stated_roles_win_over_inference(tmp_path: Path) -> None:
    bl, _ = write_study_sr(
        tmp_path,
        "bl",
        patient_id="P4",
        study="p4bl",
        study_date=date(2024, 1, 1),
        lesions=[
            LesionSpec("small", uid("P4", "s"), long_mm=11, baseline_category=our.TARGET_LESION_AT_BASELINE),
            LesionSpec(
                "big", uid("P4", "b"), long_mm=40, baseline_category=our.NON_TARGET_LESION_AT_BASELINE
            ),
        ],
    )
    fu, _ = write_study_sr(
        tmp_path,
        "fu",
        patient_id="P4",
        study="p4fu",
        study_date=date(2024, 3, 1),
        lesions=[
            LesionSpec("small", uid("P4", "s"), long_mm=11),
            LesionSpec("big", uid("P4", "b"), long_mm=40),
            LesionSpec("stated new", uid("P4", "n"), long_mm=12, role=our.ROLE_NEW),
        ],
    )
    usable, _, _ = read_reports([str(bl), str(fu)])
    t = build_timeline(usable)
    base = {tl.lesion.id: tl.lesion.kind for tl in t.timepoints[0].lesions}
    assert base == {"small": LesionKind.TARGET, "big": LesionKind.NON_TARGET}
    new = next(tl.lesion for tl in t.timepoints[1].lesions if tl.lesion.id == "stated new")
    assert new.kind is LesionKind.NEW and new.status is LesionStatus.UNEQUIVOCAL


def test_sr_dump_cli(files: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "not-dicom.dcm"
    bad.write_bytes(b"hello")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "sr", "dump", *map(str, files), str(bad), "--primary", "CRC"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{bad}: not a DICOM file"
    data = json.loads(proc.stdout)
    assert len(data["timepoints"]) == 3
    lesion = data["timepoints"][0]["lesions"][0]
    assert lesion["source"]["tracking_uid"] == U["liver1"]
    assert lesion["source"]["concepts"]["long_axis_mm"].startswith("(103339001, SCT")
    assert set(data["warnings"]) == {str(f) for f in files}
    assert data["timepoints"][0]["phase"] is None  # no index lookup: the SR alone does not say the phase
    timeline_from_dict(data)
