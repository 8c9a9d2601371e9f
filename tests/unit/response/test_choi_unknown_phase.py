"""Choi density when the contrast phase is unknown: compared on contrast-enhanced CT under an assumption
that the result and the discordance alert state (option ``choi_assume_unknown_phase``), never across a known
phase mismatch, never on CT whose enhancement is unknown."""

from __future__ import annotations

from typing import Any

from series_factory import case, lesion, visit

from agent.response.model import Criterion
from agent.response.parse import timeline_from_dict
from agent.response.table import assess_timeline

GIST = {"primary": "GIST", "therapy": ("imatinib",), "criteria": ("RECIST1.1", "Choi")}


def _assess(*visits: dict[str, Any], **options: Any) -> Any:
    return assess_timeline(timeline_from_dict(case(*visits, **GIST, options=options or None)))


def _growing_and_darkening(**fields: Any) -> tuple[dict[str, Any], ...]:
    """RECIST PD (+24 %), density -25 %: the pseudoprogression pattern."""
    return (
        visit(lesion("T1", 50, mean_hu=80), **fields),
        visit(lesion("T1", 62, mean_hu=60), **fields),
    )


def _choi(a: Any) -> Any:
    return a.get(Criterion.CHOI).timepoints[1]


def test_unknown_phase_on_enhanced_ct_is_compared_with_a_warning_repeated_in_the_alert() -> None:
    a = _assess(*_growing_and_darkening(phase=None, contrast=True))
    step = _choi(a)
    assert step.category.value == "PR"
    assert any("contrast phase unknown for T1: assumed portal_venous phase" in n for n in step.notes)
    alert = next(x for x in a.alerts if x.code == "DISC_RECIST_PD_CHOI_PR")
    assert "assumption" in alert.message and "contrast phase unknown for T1" in alert.message


def test_the_setting_off_refuses_the_comparison_and_says_why() -> None:
    a = _assess(*_growing_and_darkening(phase=None, contrast=True), choi_assume_unknown_phase=False)
    step = _choi(a)
    assert step.category.value == "NE"
    assert "unknown" in (step.ne_reason or "")
    assert not any(x.code == "DISC_RECIST_PD_CHOI_PR" for x in a.alerts)


def test_a_known_phase_mismatch_is_never_compared() -> None:
    bl, fu = _growing_and_darkening(contrast=True)
    bl["phase"], fu["phase"] = "arterial", None
    step = _choi(_assess(bl, fu))
    assert step.category.value == "NE"
    assert "arterial" in (step.ne_reason or "")


def test_unknown_enhancement_is_not_assumed() -> None:
    step = _choi(_assess(*_growing_and_darkening(phase=None, contrast=None)))
    assert step.category.value == "NE"


def test_known_phases_need_no_assumption() -> None:
    a = _assess(*_growing_and_darkening())
    assert _choi(a).category.value == "PR"
    assert not any("assum" in n for n in _choi(a).notes)
    alert = next(x for x in a.alerts if x.code == "DISC_RECIST_PD_CHOI_PR")
    assert "assumption" not in alert.message
