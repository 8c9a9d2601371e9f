"""Study context: facts from the referenced series when a lookup knows them, phase normalisation rules."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from agent.config import load_settings
from agent.response.model import Phase
from agent.sr.context import DEFAULT_PHASE_RULES, PhaseRule, SeriesInfo, normalise_phase, study_context
from agent.sr.observations import observations
from agent.sr.read import read_sr
from tests.unit.sr.srgen import LesionSpec, uid, write_study_sr


@pytest.mark.parametrize(
    ("description", "agent", "phase", "contrast"),
    [
        ("Abdomen Portal venous 70s 2.5mm", "Iomeprol", Phase.PORTAL_VENOUS, True),
        ("LIVER ARTERIAL", None, Phase.ARTERIAL, True),
        ("Late arterial phase", None, Phase.ARTERIAL, True),
        ("Delayed 3 min", None, Phase.DELAYED, True),
        ("T1 VIBE HBP 20 min", "Primovist", Phase.HEPATOBILIARY, True),
        ("Abdomen nativ", None, Phase.UNENHANCED, False),
        ("Abdomen non-contrast", None, Phase.UNENHANCED, False),
        ("Abdomen 2.5mm", "NONE", Phase.UNENHANCED, False),
        ("Abdomen 2.5mm", "Iohexol", None, True),
        ("Abdomen 2.5mm", None, None, None),
        (None, None, None, None),
    ],
)
def test_phase_normalisation(
    description: str | None, agent: str | None, phase: Phase | None, contrast: bool | None
) -> None:
    assert normalise_phase(description, agent) == (phase, contrast)


def test_custom_rules_replace_the_defaults() -> None:
    rules = [PhaseRule(r"\bfase\s+portal\b", Phase.PORTAL_VENOUS)]
    assert normalise_phase("TC fase portal", None, rules) == (Phase.PORTAL_VENOUS, True)
    assert normalise_phase("arterial", None, rules) == (None, None)
    assert DEFAULT_PHASE_RULES[0].phase is Phase.UNENHANCED


def test_rules_come_from_the_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "sr:\n  phase_rules:\n    - {pattern: 'fase portal', phase: portal_venous}\n  link_distance_mm: 8\n"
    )
    settings = load_settings(cfg)
    assert settings.sr.phase_rules[0].phase == "portal_venous" and settings.sr.link_distance_mm == 8


def test_context_from_the_index_lookup_and_from_the_sr_alone(tmp_path: Path) -> None:
    path, _ = write_study_sr(
        tmp_path,
        "fu",
        patient_id="C1",
        study="c1fu",
        study_date=date(2024, 2, 2),
        lesions=[LesionSpec("T1", uid("C1", "t1"), long_mm=22)],
    )
    report = read_sr(path)
    alone = study_context(report)
    assert (alone.study_uid, alone.date, alone.modality, alone.facts_from) == (
        uid("c1fu"),
        date(2024, 2, 2),
        "CT",
        "sr",
    )
    assert alone.phase is None and alone.slice_thickness_mm is None

    calls: list[tuple[str | None, str | None, str | None]] = []

    def lookup(study: str | None, series: str | None, sop: str | None) -> SeriesInfo | None:
        calls.append((study, series, sop))
        if series != uid("c1fu", "series"):
            return None
        return SeriesInfo(
            study_uid=study,
            series_uid=series,
            study_date=date(2024, 2, 1),
            modality="CT",
            slice_thickness_mm=Decimal("2.5"),
            series_description="Leber arteriell",
            contrast_agent="Iomeprol",
        )

    ctx = study_context(report, lookup)
    assert ctx.facts_from == "index"
    assert (ctx.date, ctx.slice_thickness_mm, ctx.phase, ctx.contrast) == (
        date(2024, 2, 1),
        Decimal("2.5"),
        Phase.ARTERIAL,
        True,
    )
    assert calls and calls[0][2] == uid("c1fu", "img")
    (obs,), _ = observations(report, lookup)
    assert obs.phase is Phase.ARTERIAL  # the lesion's own series phase


@pytest.mark.parametrize(
    ("description", "agent", "delay", "phase", "contrast"),
    [
        ("PV 2.5mm", None, None, Phase.PORTAL_VENOUS, True),
        ("ABD VEN 3mm", None, None, Phase.PORTAL_VENOUS, True),
        ("Abdomen 70s", None, None, Phase.PORTAL_VENOUS, True),
        ("Leber portal venös", None, None, Phase.PORTAL_VENOUS, True),
        ("Abdomen temps portal", None, None, Phase.PORTAL_VENOUS, True),
        ("Phase veineuse", None, None, Phase.PORTAL_VENOUS, True),
        ("TC abdomen fase portal", None, None, Phase.PORTAL_VENOUS, True),
        ("Fase venosa", None, None, Phase.PORTAL_VENOUS, True),
        ("ART 1.0", None, None, Phase.ARTERIAL, True),
        ("Phase artérielle", None, None, Phase.ARTERIAL, True),
        ("Temps tardif", None, None, Phase.DELAYED, True),
        ("Fase tardía", None, None, Phase.DELAYED, True),
        ("Abdomen sans injection", None, None, Phase.UNENHANCED, False),
        ("TC sin contraste", None, None, Phase.UNENHANCED, False),
        # Contrast timing decides only when the words say nothing.
        ("Abdomen 2.5", "Iomeprol", Decimal(70), Phase.PORTAL_VENOUS, True),
        ("Abdomen 2.5", "Iomeprol", Decimal(35), Phase.ARTERIAL, True),
        ("Abdomen 2.5", "Iomeprol", Decimal(300), Phase.DELAYED, True),
        ("Abdomen 2.5", "Iomeprol", Decimal(5), None, True),
        ("Arterial", "Iomeprol", Decimal(70), Phase.ARTERIAL, True),
        ("Abdomen 2.5", "NONE", Decimal(70), Phase.UNENHANCED, False),
    ],
)
def test_phase_words_in_several_languages_and_contrast_timing(
    description: str, agent: str | None, delay: Decimal | None, phase: Phase | None, contrast: bool | None
) -> None:
    assert normalise_phase(description, agent, DEFAULT_PHASE_RULES, delay) == (phase, contrast)


def test_acquisition_context_from_a_header_or_a_query_answer() -> None:
    from pydicom.dataset import Dataset

    from agent.sr.context import contrast_delay, merge, series_info

    ds = Dataset()
    ds.Modality = "ct"
    ds.SeriesDescription = "Abdomen 2.5"
    ds.ContrastBolusAgent = "Iomeprol"
    ds.ContrastBolusStartTime = "235930"
    ds.AcquisitionTime = "000040.5"  # 70.5 s later, across midnight
    ds.SliceThickness = "2.5"
    ds.KVP = "120"
    ds.PixelSpacing = ["0.75", "0.7"]
    info = series_info(ds, "retrieved")
    assert info.modality == "CT" and info.kvp == 120 and info.slice_thickness_mm == Decimal("2.5")
    assert info.pixel_spacing_mm == (Decimal("0.75"), Decimal("0.7"))
    assert info.contrast_delay_s == Decimal("70.5") and info.source == "retrieved"
    assert (
        normalise_phase(
            info.series_description, info.contrast_agent, DEFAULT_PHASE_RULES, info.contrast_delay_s
        )[0]
        is Phase.PORTAL_VENOUS
    )
    answer = Dataset()  # a C-FIND answer: only the keys the PACS returns
    answer.Modality = "CT"
    answer.SeriesDescription = ""
    queried = series_info(answer, "query")
    assert queried.series_description is None and queried.kvp is None
    assert merge(queried, info).kvp == 120 and merge(queried, info).source == "query"
    assert contrast_delay("", "120000") is None and contrast_delay("1200", "120100") == 60
