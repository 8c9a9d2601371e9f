"""An OHIF v3 baseline and follow-up through the pipeline on a real index (migrated SQLite; the same on
PostgreSQL in tests/integration/test_postgresql.py).

OHIF's SR lists each measured image twice: in the evidence (with study and series) and in its Image
Library (without the series). The image's series must come from the evidence, so that its acquisition
context is looked up and asked of the PACS by study, series and instance, never by SOP Instance UID alone.
"""

from __future__ import annotations

from pathlib import Path

from support.ohif import ohif_sr, run_pipeline, spool_ohif_patient
from support.worklist import migrated_sessions

from agent.config import Settings
from agent.pipeline.acquisition import measured_images
from agent.sr.read import read_sr

BASELINE, FOLLOW_UP = "1.2.826.0.1.3680043.10.1455.14.1.1", "1.2.826.0.1.3680043.10.1455.14.1.2"


def test_measured_images_take_their_series_from_the_evidence_not_the_image_library() -> None:
    report = read_sr(ohif_sr("ohif3_labels_baseline.dcm"))
    assert any(e.series_uid is None for e in report.evidence)  # the Image Library entries
    images = measured_images([report], density=False)
    assert len(images) == 2
    assert all(i.study_uid == BASELINE and i.series_uid == f"{BASELINE}.1" for i in images)


def check_ohif_patient(out: dict[str, tuple[str, dict | None]]) -> None:
    state, detail = out[FOLLOW_UP]
    assert state == "done" and detail is not None
    recist = detail["assessment"]["recist"]
    assert recist["target_sums_mm"] == [67.5, 50.25]
    assert recist["timepoint_responses"] == [None, "SD"]
    assert not any("not in the SR's evidence" in w for w in detail["warnings"])


def test_ohif_follow_up_with_its_baseline_sr_is_assessed_by_label(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    # The follow-up's images were routed here; the baseline's stayed in the PACS (no peer configured).
    spool_ohif_patient(
        spool,
        tmp_path,
        ("ohif3_labels_followup.dcm",),
        ("ohif3_labels_baseline.dcm", "ohif3_labels_followup.dcm"),
    )
    settings = Settings(
        storage={"spool_dir": str(spool), "min_free_mb": 0}, pipeline={"results_dir": str(tmp_path / "out")}
    )
    out = run_pipeline(migrated_sessions(tmp_path / "agent.db"), settings, spool)
    check_ohif_patient(out)
    assert any("not held and no query/retrieve peer" in w for w in out[FOLLOW_UP][1]["warnings"])  # type: ignore[index]
