"""Chun morphologic response: groups, lesion-level response, patient-level worst lesion (criteria §7)."""

from __future__ import annotations

from typing import Any

import pytest
from series_factory import assess, categories, lesion, timeline, visit

from agent.response import morphology
from agent.response.model import Category, Criterion

CRLM: dict[str, Any] = {
    "primary": "CRC",
    "therapy": ("FOLFOX", "bevacizumab"),
    "criteria": ("RECIST1.1", "Chun"),
}


def g(lid: str, group: int | None, mm: float = 40, organ: str = "liver", **extra: Any) -> dict[str, Any]:
    if group is not None:
        extra["chun_group"] = group
    return lesion(lid, mm, organ=organ, **extra)


def chun(*visits: dict[str, Any], **kw: Any) -> list[str | None]:
    return categories(assess(*visits, **{**CRLM, **kw}), Criterion.CHUN)


@pytest.mark.parametrize(
    ("features", "group"),
    [
        ({"chun_attenuation": "homogeneous", "chun_interface": "sharp", "chun_rim": "absent"}, 1),
        ({"chun_attenuation": "heterogeneous", "chun_interface": "poorly_defined", "chun_rim": "present"}, 3),
        ({"chun_attenuation": "heterogeneous", "chun_interface": "poorly_defined"}, 3),  # rim may vary
        ({"chun_attenuation": "mixed", "chun_interface": "variable", "chun_rim": "variable"}, 2),
        ({"chun_attenuation": "homogeneous", "chun_interface": "sharp", "chun_rim": "present"}, 2),
        ({"chun_attenuation": "homogeneous", "chun_interface": "sharp"}, None),  # rim unknown
        ({}, None),
    ],
)
def test_group_from_features(features: dict[str, str], group: int | None) -> None:
    tl = timeline(visit(lesion("T1", 40, **features)))
    assert morphology.morphology_group(tl.baseline.lesions[0]) == group


def test_radiologist_group_takes_priority_over_features() -> None:
    features = {"chun_attenuation": "heterogeneous", "chun_interface": "poorly_defined"}
    tl = timeline(visit(lesion("T1", 40, chun_group=2, **features)))
    assert morphology.morphology_group(tl.baseline.lesions[0]) == 2


@pytest.mark.parametrize(
    ("before", "after", "response"),
    [
        (3, 1, Category.OPTIMAL),
        (2, 1, Category.OPTIMAL),
        (3, 2, Category.INCOMPLETE),
        (3, 3, Category.NO_RESPONSE),
        (2, 2, Category.NO_RESPONSE),
        (2, 3, Category.NO_RESPONSE),
        (1, 1, None),  # already group 1: left out of the patient response (docs/criteria.md §7.2)
        (1, 2, Category.NO_RESPONSE),  # ... unless it worsens
        (1, 3, Category.NO_RESPONSE),
    ],
)
def test_lesion_response_table(before: int, after: int, response: Category | None) -> None:
    assert morphology.lesion_response(before, after) is response


def test_worst_lesion_wins() -> None:
    assert morphology.worst_lesion_response([Category.OPTIMAL, Category.INCOMPLETE]) is Category.INCOMPLETE
    assert morphology.worst_lesion_response([Category.OPTIMAL, Category.NO_RESPONSE]) is Category.NO_RESPONSE
    assert morphology.worst_lesion_response([Category.OPTIMAL, Category.NE]) is Category.NE
    assert morphology.worst_lesion_response([]) is Category.NE


def test_patient_level_is_the_worst_and_notes_disagreement() -> None:
    a = assess(visit(g("T1", 3), g("T2", 3)), visit(g("T1", 1), g("T2", 2)), **CRLM)
    result = a.get(Criterion.CHUN)
    assert result is not None and result.timepoints[1] is not None
    assert result.timepoints[1].category is Category.INCOMPLETE
    assert any("disagree" in note for note in result.timepoints[1].notes)


def test_features_at_follow_up_are_used() -> None:
    g1 = {"chun_attenuation": "homogeneous", "chun_interface": "sharp", "chun_rim": "absent"}
    assert chun(visit(g("T1", 3)), visit(lesion("T1", 30, **g1))) == [None, "optimal"]


def test_lesion_without_group_gives_ne() -> None:
    assert chun(visit(g("T1", 3), g("T2", 3)), visit(g("T1", 1), g("T2", None))) == [None, "NE"]


def test_baseline_group_1_is_ne() -> None:
    assert chun(visit(g("T1", 1)), visit(g("T1", 1))) == [None, "NE"]


def test_only_liver_targets_are_assessed() -> None:
    lung = g("L1", None, organ="lung")
    nt = lesion("NT1", kind="non-target", chun_group=3)
    assert chun(visit(g("T1", 3), lung, nt), visit(g("T1", 2), lung, nt)) == [None, "incomplete"]


def test_no_liver_target_is_ne() -> None:
    assert chun(visit(g("L1", 3, organ="lung")), visit(g("L1", 1, organ="lung"))) == [None, "NE"]


def test_ct_only() -> None:
    assert chun(visit(g("T1", 3)), visit(g("T1", 1), modality="MR")) == [None, "NE"]
    assert chun(visit(g("T1", 3), modality="MR"), visit(g("T1", 1))) == [None, "NE"]


def test_new_lesions_do_not_change_chun() -> None:
    new = lesion("N1", 15, kind="new", chun_group=3)
    assert chun(visit(g("T1", 3)), visit(g("T1", 1), new)) == [None, "optimal"]


def test_bor_is_the_best_follow_up() -> None:
    a = assess(visit(g("T1", 3)), visit(g("T1", 3)), visit(g("T1", 2)), visit(g("T1", None)), **CRLM)
    result = a.get(Criterion.CHUN)
    assert result is not None
    assert [c.value if c else None for c in result.categories()] == [None, "none", "incomplete", "NE"]
    assert result.bor is Category.INCOMPLETE
