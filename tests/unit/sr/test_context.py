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
