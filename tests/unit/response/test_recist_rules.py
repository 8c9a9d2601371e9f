"""RECIST 1.1 rules and boundaries (docs/criteria.md §2), one behaviour per test."""

from __future__ import annotations

from decimal import Decimal

import pytest
from recist_factories import new, node, non_target, sums, target, timeline

from agent.response import recist
from agent.response.model import Category, Lesion, LesionKind, LesionStatus
from agent.response.registry import Problem, build_registry

D = Decimal


def _overall(tl: object) -> list[str | None]:
    result = recist.assess(tl)  # type: ignore[arg-type]
    return [c.value if c else None for c in result.categories()]


def test_pd_needs_both_20_percent_and_5_mm() -> None:
    assert recist.pd_test(D("26"), D("20"))  # +30 %, +6 mm
    assert not recist.pd_test(D("24"), D("20"))  # +20 %, +4 mm
    assert not recist.pd_test(D("29.4"), D("24.5"))  # exactly +20 % but +4.9 mm
    assert recist.pd_test(D("31.2"), D("26.0"))  # exactly +20 % and +5.2 mm


def test_pd_against_a_zero_nadir_is_decided_by_5_mm() -> None:
    assert not recist.pd_test(D("4"), D("0"))
    assert recist.pd_test(D("5"), D("0"))
    assert not recist.pd_test(D("0"), D("0"))


def test_pr_threshold_is_inclusive_and_exact() -> None:
    assert recist.pr_test(D("23.1"), D("33.0"))
    assert not recist.pr_test(D("23.2"), D("33.0"))


@pytest.mark.parametrize(
    ("lesion_kw", "expected"),
    [
        ({"status": "disappeared", "long_axis_mm": 0}, D(0)),
        ({"status": "coalesced"}, D(0)),
        ({"status": "too_small"}, D(5)),
        ({"status": "not_assessed"}, None),
        ({"long_axis_mm": "3.5"}, D("3.5")),  # a measured value is used as is, even < 5 mm
        ({"fragments_mm": [15, 10], "long_axis_mm": None}, D(25)),
    ],
)
def test_target_value(lesion_kw: dict[str, object], expected: Decimal | None) -> None:
    base = target("T1", 20)
    base.update(lesion_kw)
    tl = timeline([target("T1", 20)], [base])
    lesion = tl.timepoints[1].lesions[0]
    assert recist.target_value(lesion) == expected


def test_node_contributes_its_short_axis() -> None:
    lesion = Lesion("N1", "lymph_node", LesionKind.TARGET, LesionStatus.MEASURED, True, D(25), D(12))
    assert recist.target_value(lesion) == D(12)


def test_pd_takes_precedence_over_pr() -> None:
    assert _overall(sums(100, 40, 50)) == [None, "PR", "PD"]


def test_nadir_excludes_not_evaluable_partial_sums() -> None:
    tl = timeline(
        [target("T1", 60), target("T2", 40)],
        [target("T1", 40), target("T2", None, status="not_assessed")],
        [target("T1", 55), target("T2", 35)],
    )
    assert _overall(tl) == [None, "NE", "SD"]


def test_missing_target_still_gives_pd_when_the_assessed_ones_meet_it() -> None:
    tl = timeline(
        [target("T1", 20), target("T2", 15), target("T3", 15)],
        [target("T1", 50), target("T2", 30)],
    )
    result = recist.assess(tl)
    tp = result.timepoints[1]
    assert tp is not None and tp.category is Category.PD and tp.sum_mm is None and tp.partial_sum_mm == D(80)
    assert tp.missing_targets == ("T3",)


def test_normal_size_node_growth_never_gives_pd() -> None:
    tl = timeline([node("N1", 20)], [node("N1", 3)], [node("N1", "9.5")])
    assert _overall(tl) == [None, "CR", "CR"]


def test_pr_persists_until_pd_by_default_and_not_when_strict() -> None:
    assert _overall(sums(100, 70, 70, 80, 80, 80)) == [None, "PR", "PR", "PR", "PR", "PR"]
    strict = sums(100, 70, 70, 80, 80, 80, options={"pr_persistence": "strict"})
    assert _overall(strict) == [None, "PR", "PR", "SD", "SD", "SD"]


def test_pr_persistence_waits_for_confirmation_when_required() -> None:
    tl = sums(100, 68, 80, options={"confirmation_required": True})
    assert _overall(tl) == [None, "PR", "SD"]
    confirmed = sums(100, 68, 69, 80, options={"confirmation_required": True})
    assert _overall(confirmed) == [None, "PR", "PR", "PR"]


def test_unequivocal_new_lesion_gives_pd_but_equivocal_does_not() -> None:
    base = [target("T1", 50)]
    assert _overall(timeline(base, [target("T1", 30), new("N1")])) == [None, "PD"]
    assert _overall(timeline(base, [target("T1", 30), new("N1", status="equivocal")])) == [None, "PR"]


def test_new_node_below_10_mm_is_not_a_new_lesion() -> None:
    small = {"id": "NN", "organ": "lymph_node", "kind": "new", "is_node": True, "short_axis_mm": 9}
    assert _overall(timeline([target("T1", 50)], [target("T1", 48), small])) == [None, "SD"]


def test_equivocal_new_lesion_confirmed_later_backdates_pd() -> None:
    tl = timeline(
        [target("T1", 50)],
        [target("T1", 48), new("N1", status="equivocal")],
        [target("T1", 48), new("N1")],
    )
    result = recist.assess(tl)
    first = result.timepoints[1]
    assert (
        first is not None
        and first.provisional_category is Category.SD
        and first.category is Category.PD
        and first.backdated
    )
    assert result.pd_index == 1 and result.pd_date == tl.timepoints[1].date


def test_reappearance_after_overall_cr_is_pd_regardless_of_5_mm() -> None:
    tl = timeline([target("T1", 20)], [target("T1", 0, status="disappeared")], [target("T1", 4)])
    result = recist.assess(tl)
    assert _overall(tl) == [None, "CR", "PD"]
    tp = result.timepoints[2]
    assert tp is not None and tp.target is Category.PR and tp.reappearance_after_cr


def test_non_target_present_again_after_cr_is_pd() -> None:
    tl = timeline(
        [target("T1", 20), non_target("NT1")],
        [target("T1", 0, status="disappeared"), non_target("NT1", "absent")],
        [target("T1", 0, status="disappeared"), non_target("NT1", "present")],
    )
    assert _overall(tl) == [None, "CR", "PD"]


def test_target_cr_with_persisting_non_target_is_pr_and_not_evaluated_non_target_too() -> None:
    base = [target("T1", 20), non_target("NT1")]
    gone = target("T1", 0, status="disappeared")
    assert _overall(timeline(base, [gone, non_target("NT1")])) == [None, "PR"]
    assert _overall(timeline(base, [gone, non_target("NT1", "not_assessed")])) == [None, "PR"]
    assert _overall(timeline(base, [gone, non_target("NT1", "absent")])) == [None, "CR"]


def test_non_target_node_below_10_mm_counts_as_absent() -> None:
    nt_node = {"id": "NT1", "organ": "lymph_node", "kind": "non-target", "is_node": True, "short_axis_mm": 12}
    shrunk = dict(nt_node, short_axis_mm=8)
    assert _overall(timeline([nt_node], [shrunk])) == [None, "CR"]
    assert _overall(timeline([nt_node], [nt_node])) == [None, "NON_CR_NON_PD"]


def test_non_target_only_disease_uses_table_2() -> None:
    base = [non_target("NT1")]
    assert _overall(timeline(base, [non_target("NT1", "not_assessed")])) == [None, "NE"]
    assert _overall(timeline(base, [non_target("NT1", "unequivocal_progression")])) == [None, "PD"]


def test_time_point_without_imaging_is_ne() -> None:
    assert _overall(timeline([target("T1", 50), non_target("NT1")], [])) == [None, "NE"]


def test_bor_minimum_sd_duration() -> None:
    early = sums(100, 95, 125, days=[-7, 21, 49])
    late = sums(100, 95, 125, days=[-7, 49, 105])
    assert recist.assess(early).bor is Category.PD
    assert recist.assess(late).bor is Category.SD


def test_bor_with_confirmation() -> None:
    opts = {"confirmation_required": True}
    assert recist.assess(sums(100, 60, 60, days=[-7, 49, 77], options=opts)).bor is Category.PR
    assert recist.assess(sums(100, 60, 60, days=[-7, 49, 70], options=opts)).bor is Category.SD
    cr = timeline(
        [target("T1", 20)],
        [target("T1", 0, status="disappeared")],
        [target("T1", 0, status="disappeared")],
        options=opts,
    )
    assert recist.assess(cr).bor is Category.CR


def test_bor_ignores_visits_after_the_first_pd() -> None:
    result = recist.assess(sums(100, 130, 60))
    assert result.bor is Category.PD and result.pd_index == 1
    later = result.timepoints[2]
    assert later is not None and later.post_pd and later.category is Category.PR


def test_next_thresholds() -> None:
    result = recist.assess(sums(100, 40))
    by_cat = {t.category: t.value for t in result.next_thresholds}
    assert by_cat[Category.PD] == D(48)  # max(1.2 x 40, 40 + 5)
    assert by_cat[Category.PR] == D(70)
    small = recist.assess(sums(20, 10))
    assert {t.category: t.value for t in small.next_thresholds}[Category.PD] == D(
        15
    )  # nadir + 5 > 1.2 x nadir


def test_registry_reports_tracking_problems() -> None:
    tl = timeline(
        [target("T1", 40), non_target("NT1")],
        [target("T1", 38, organ="lung"), target("T9", 10), new("NT1", 12)],
        [target("T1", 38), target("NT1", 10)],
    )
    reg = build_registry(tl)
    problems = {(p.lesion_id, p.problem) for p in reg.problems_at(1)}
    assert problems == {
        ("T1", Problem.ORGAN_CHANGED),
        ("T9", Problem.UNKNOWN_ID),
        ("NT1", Problem.PREVIOUSLY_SEEN),
    }
    assert [(p.lesion_id, p.problem) for p in reg.problems_at(2)] == [("NT1", Problem.KIND_CHANGED)]
    # the mislabelled 'new' record continues the baseline non-target instead of counting as new disease
    assert reg.non_target_records[1][0] is not None and not reg.unequivocal_new(1)


def test_prior_visible_new_lesion_is_not_new() -> None:
    tl = timeline([target("T1", 40)], [target("T1", 40), new("N1", prior_visible=True)])
    assert _overall(tl) == [None, "SD"]
    assert build_registry(tl).problems_at(1)[0].problem is Problem.PREVIOUSLY_SEEN
