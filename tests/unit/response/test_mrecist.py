"""mRECIST and EASL (HCC only): each rule and its boundary (docs/criteria.md §5-§6)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from series_factory import assess, categories, lesion, timeline, visit

from agent.response import mrecist
from agent.response.model import Category, Criterion

D = Decimal
HCC: dict[str, Any] = {
    "primary": "HCC",
    "therapy": ("atezolizumab", "bevacizumab"),
    "criteria": ("RECIST1.1", "mRECIST", "EASL"),
}


def v(
    lid: str, long: float | str | None, perp: float | str | None, total: float = 50, **extra: Any
) -> dict[str, Any]:
    return lesion(lid, total, viable_long_axis_mm=long, viable_perp_axis_mm=perp, phase="arterial", **extra)


def of(criterion: Criterion, *visits: dict[str, Any], **kw: Any) -> list[str | None]:
    return categories(assess(*visits, **{**HCC, **kw}), criterion)


# -- arithmetic ----------------------------------------------------------------------------------------


def test_mrecist_pr_inclusive_at_minus_30_percent() -> None:
    assert mrecist.mrecist_pr(D("14"), D("20"))
    assert not mrecist.mrecist_pr(D("14.1"), D("20"))


def test_mrecist_pd_has_no_5mm_rule_by_default() -> None:
    assert mrecist.mrecist_pd(D("24"), D("20"), require_5mm=False)
    assert not mrecist.mrecist_pd(D("23.9"), D("20"), require_5mm=False)
    assert not mrecist.mrecist_pd(D("24"), D("20"), require_5mm=True)
    assert mrecist.mrecist_pd(D("25"), D("20"), require_5mm=True)


def test_easl_thresholds_inclusive() -> None:
    assert mrecist.easl_pr(D("600"), D("1200"))
    assert not mrecist.easl_pr(D("600.1"), D("1200"))
    assert mrecist.easl_pd(D("375"), D("300"))
    assert not mrecist.easl_pd(D("374.9"), D("300"))


def test_zero_nadir_makes_any_viable_tumour_pd() -> None:
    assert mrecist.mrecist_pd(D("1"), D("0"), require_5mm=False)
    assert mrecist.easl_pd(D("1"), D("0"))
    assert not mrecist.easl_pd(D("0"), D("0"))


def test_viable_values_of_statuses() -> None:
    tl = timeline(
        visit(v("T1", 20, 10), lesion("T2", 0, status="disappeared"), lesion("T3", None, status="too_small"))
    )
    t1, t2, t3 = tl.baseline.lesions
    assert mrecist.viable_diameter(t1) == 20 and mrecist.viable_product(t1) == 200
    assert mrecist.viable_diameter(t2) == 0 and mrecist.viable_product(t2) == 0
    assert mrecist.viable_diameter(t3) == 5 and mrecist.viable_product(t3) == 25


# -- applicability -------------------------------------------------------------------------------------


def test_not_applicable_outside_hcc() -> None:
    a = assess(visit(v("T1", 40, 30)), visit(v("T1", 20, 15)), **{**HCC, "primary": "CRC"})
    for criterion in (Criterion.MRECIST, Criterion.EASL):
        result = a.get(criterion)
        assert result is not None and not result.applicable and result.bor is Category.NA
        assert categories(a, criterion) == [None, "NA"]


# -- mRECIST -------------------------------------------------------------------------------------------


def test_viable_shrinkage_with_total_growth_is_pr() -> None:
    visits = (visit(v("T1", 40, 30, total=40)), visit(v("T1", 20, 15, total=42)))
    assert of(Criterion.MRECIST, *visits) == [None, "PR"]
    assert of(Criterion.RECIST, *visits) == [None, "SD"]


def test_no_residual_enhancement_is_cr() -> None:
    assert of(Criterion.MRECIST, visit(v("T1", 40, 30)), visit(v("T1", 0, 0))) == [None, "CR"]


def test_cr_of_targets_with_a_persisting_non_target_is_pr() -> None:
    nt = lesion("NT1", kind="non-target", organ="portal_vein")
    assert of(Criterion.MRECIST, visit(v("T1", 40, 30), nt), visit(v("T1", 0, 0), nt)) == [None, "PR"]


@pytest.mark.parametrize(("option", "expected"), [(False, "PD"), (True, "SD")])
def test_20_to_24mm_is_pd_unless_5mm_required(option: bool, expected: str) -> None:
    visits = (visit(v("T1", 20, 20)), visit(v("T1", 24, 24)))
    assert of(Criterion.MRECIST, *visits, options={"mrecist_require_5mm": option}) == [None, expected]


def test_pd_is_measured_from_the_nadir() -> None:
    visits = (visit(v("T1", 40, 30)), visit(v("T1", 20, 15)), visit(v("T1", 24, 15)))
    assert of(Criterion.MRECIST, *visits) == [None, "PR", "PD"]


def test_missing_viable_diameter_is_ne_unless_the_assessed_ones_give_pd() -> None:
    missing = lesion("T2", 30)  # no viable measurement (no arterial phase)
    assert of(
        Criterion.MRECIST, visit(v("T1", 20, 10), v("T2", 20, 10)), visit(v("T1", 20, 10), missing)
    ) == [
        None,
        "NE",
    ]
    assert of(
        Criterion.MRECIST, visit(v("T1", 20, 10), v("T2", 20, 10)), visit(v("T1", 50, 10), missing)
    ) == [
        None,
        "PD",
    ]


def test_new_lesion_is_pd() -> None:
    new = lesion("N1", 12, kind="new")
    assert of(Criterion.MRECIST, visit(v("T1", 40, 30)), visit(v("T1", 20, 15), new)) == [None, "PD"]
    assert of(Criterion.EASL, visit(v("T1", 40, 30)), visit(v("T1", 20, 15), new)) == [None, "PD"]


def test_result_carries_viable_sums() -> None:
    a = assess(visit(v("T1", 40, 30), v("T2", 20, 10)), visit(v("T1", 20, 15), v("T2", 10, 10)), **HCC)
    result = a.get(Criterion.MRECIST)
    assert result is not None
    step = result.timepoints[1]
    assert step is not None
    assert (step.baseline_sum_mm, step.sum_mm, step.change_vs_baseline_pct) == (60, 30, -50)
    easl = a.get(Criterion.EASL)
    assert easl is not None and easl.timepoints[1] is not None
    assert (easl.timepoints[1].baseline_sum_mm, easl.timepoints[1].sum_mm) == (1400, 400)


def test_mrecist_thresholds_for_next_read() -> None:
    a = assess(visit(v("T1", 40, 30)), visit(v("T1", 30, 15)), **HCC, options={"mrecist_require_5mm": True})
    result = a.get(Criterion.MRECIST)
    assert result is not None
    values = {th.category: th.value for th in result.next_thresholds}
    assert values == {Category.PR: 28, Category.PD: 36}  # max(1.2 x 30, 30 + 5)


# -- EASL ----------------------------------------------------------------------------------------------


def test_easl_exactly_minus_50_percent_is_pr() -> None:
    assert of(Criterion.EASL, visit(v("T1", 40, 30)), visit(v("T1", 30, 20))) == [None, "PR"]


def test_easl_series_pr_then_pd_vs_nadir() -> None:
    visits = (visit(v("T1", 40, 30)), visit(v("T1", 20, 15)), visit(v("T1", 25, 20)))
    assert of(Criterion.EASL, *visits) == [None, "PR", "PD"]
    a = assess(*visits, **HCC)
    easl = a.get(Criterion.EASL)
    assert easl is not None and easl.bor is Category.PR and easl.pd_index == 2


def test_easl_needs_both_viable_diameters() -> None:
    assert of(Criterion.EASL, visit(v("T1", 40, 30)), visit(v("T1", 20, None))) == [None, "NE"]
    assert of(Criterion.MRECIST, visit(v("T1", 40, 30)), visit(v("T1", 20, None))) == [None, "PR"]
