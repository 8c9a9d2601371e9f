"""PET measurement SRs (TID 1500 with SUV, as dcmqi writes them) read as metabolic measurements per lesion
(docs/criteria.md §13.3), on the repository's real dcmqi sample."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from agent.pipeline.assemble import read_reports, split_pet
from agent.response.metabolic import EORTC, MetabolicCategory
from agent.response.metabolic import assess as assess_metabolic
from agent.response.model import Context, PetLesion, Timeline, TimePoint
from agent.sr.pet import pet_scan
from agent.sr.read import read_sr

SAMPLE = (
    Path(__file__).resolve().parents[2]
    / "data"
    / "sr"
    / "01_dcmqi_tid1500_pet_volumetric_from_seg_comprehensive.dcm"
)


def test_dcmqi_sample_gives_suvmax_suvpeak_and_volume_per_lesion() -> None:
    report = read_sr(SAMPLE)
    scan = pet_scan(report, report.study_date)
    assert scan is not None and len(scan.lesions) == 1
    lesion = scan.lesions[0]
    assert lesion.id == "2.25.318774060119084600392715520575818119084"
    assert (lesion.suv_max, lesion.suv_peak) == (Decimal("10.3814"), Decimal("9.45534"))
    assert lesion.sul_peak is None and lesion.sul_max is None  # the sample is SUVbw only
    assert lesion.volume_ml == Decimal("33.5824")


def test_pipeline_reader_sets_the_pet_sr_aside_as_a_pet_scan() -> None:
    usable, failures, _ = read_reports([SAMPLE])
    assert not failures and usable[0].context.modality == "PT"
    anatomic, pet = split_pet(usable)
    assert anatomic == [] and len(pet) == 1 and pet[0].date.isoformat() == "1986-03-11"


def test_sample_without_sul_falls_back_to_eortc() -> None:
    report = read_sr(SAMPLE)
    base = pet_scan(report, report.study_date)
    assert base is not None
    later = replace(
        base, date=base.date + timedelta(days=60), lesions=(replace(base.lesions[0], suv_max=Decimal("6.5")),)
    )
    tl = Timeline(Context(base.date + timedelta(days=1), "HNSCC"), (TimePoint(base.date),), pet=(base, later))
    (result,) = assess_metabolic(tl)
    assert result.method == EORTC and result.category is MetabolicCategory.PMR  # 10.38 -> 6.5: -37.4 %
    assert result.fallback and "SULpeak is not available" in result.fallback
    assert isinstance(base.lesions[0], PetLesion)
