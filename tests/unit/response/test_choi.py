"""Choi and modified Choi: each rule and its boundary (docs/criteria.md §4)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from series_factory import case, categories, lesion, timeline, visit

from agent.response import choi
from agent.response.model import Category, Criterion, Threshold
from agent.response.parse import timeline_from_dict
from agent.response.table import assess_timeline

D = Decimal
GIST = {"primary": "GIST", "therapy": ("imatinib",), "criteria": ("RECIST1.1", "Choi")}


def t(lid: str, mm: float | str, hu: float | str | None, **extra: Any) -> dict[str, Any]:
    return lesion(lid, mm, mean_hu=hu, **extra)


def choi_of(*visits: dict[str, Any], modified: bool = False, **kw: Any) -> list[str | None]:
    settings = {**GIST, **kw}
    if modified:
        settings["criteria"] = ("RECIST1.1", "mChoi")
    a = assess_timeline(timeline_from_dict(case(*visits, **settings)))
    return categories(a, Criterion.MCHOI if modified else Criterion.CHOI)


# -- arithmetic ----------------------------------------------------------------------------------------


def test_size_pr_is_inclusive_at_minus_10_percent() -> None:
    assert choi.choi_size_pr(D("90"), D("100"))
    assert not choi.choi_size_pr(D("90.1"), D("100"))


def test_density_pr_is_inclusive_at_minus_15_percent() -> None:
    assert choi.choi_density_pr(D("85"), D("100"))
    assert not choi.choi_density_pr(D("85.1"), D("100"))


def test_size_pd_is_inclusive_at_plus_10_percent_with_no_5mm_rule() -> None:
    assert choi.choi_size_pd(D("11"), D("10"))  # +1 mm is enough
    assert not choi.choi_size_pd(D("10.99"), D("10"))


def test_size_pd_against_a_zero_reference_is_any_growth() -> None:
    assert choi.choi_size_pd(D("0.1"), D("0"))
    assert not choi.choi_size_pd(D("0"), D("0"))


def test_float_trap_exact_decimal() -> None:
    # 0.1 + 0.2 style: 33.3 -> 29.97 is exactly -10 %
    assert choi.choi_size_pr(D("29.97"), D("33.3"))


# -- response ------------------------------------------------------------------------------------------


def test_size_minus_10_percent_exactly_is_pr() -> None:
    assert choi_of(visit(t("T1", 50, 60)), visit(t("T1", 45, 60))) == [None, "PR"]


def test_density_minus_15_percent_exactly_is_pr() -> None:
    assert choi_of(visit(t("T1", 80, 100)), visit(t("T1", 80, 85))) == [None, "PR"]


def test_just_short_of_both_thresholds_is_sd() -> None:
    assert choi_of(visit(t("T1", 100, 100)), visit(t("T1", "90.1", "85.1"))) == [None, "SD"]


def test_growth_with_halved_density_is_pr_pseudoprogression() -> None:
    assert choi_of(visit(t("T1", 50, 80)), visit(t("T1", 62, 40))) == [None, "PR"]


def test_plus_10_percent_without_density_response_is_pd() -> None:
    assert choi_of(visit(t("T1", 50, 60)), visit(t("T1", 55, 57))) == [None, "PD"]


def test_plus_10_percent_with_density_response_is_pr_not_pd() -> None:
    assert choi_of(visit(t("T1", 50, 60)), visit(t("T1", 55, 51))) == [None, "PR"]


@pytest.mark.parametrize("nodule", ["new", "enlarging"])
def test_intratumoral_nodule_is_pd_even_while_shrinking(nodule: str) -> None:
    assert choi_of(visit(t("T1", 80, 70)), visit(t("T1", 50, 45, intratumoral_nodule=nodule))) == [None, "PD"]


def test_unequivocal_new_lesion_is_pd() -> None:
    assert choi_of(visit(t("T1", 80, 70)), visit(t("T1", 60, 50), lesion("N1", 12, kind="new"))) == [
        None,
        "PD",
    ]


def test_equivocal_new_lesion_is_not_pd() -> None:
    new = lesion("N1", 6, kind="new", status="equivocal")
    assert choi_of(visit(t("T1", 80, 70)), visit(t("T1", 60, 50), new)) == [None, "PR"]


def test_non_target_unequivocal_progression_is_pd() -> None:
    nt = lesion("NT1", kind="non-target", organ="peritoneum")
    nt_pd = lesion("NT1", kind="non-target", organ="peritoneum", status="unequivocal_progression")
    assert choi_of(visit(t("T1", 80, 70), nt), visit(t("T1", 60, 50), nt_pd)) == [None, "PD"]


def test_target_not_assessed_is_ne() -> None:
    missing = lesion("T2", None, status="not_assessed")
    assert choi_of(visit(t("T1", 80, 70), t("T2", 30, 60)), visit(t("T1", 60, 50), missing)) == [None, "NE"]


def test_not_ct_is_ne() -> None:
    assert choi_of(visit(t("T1", 80, 70)), visit(t("T1", 40, None), modality="MR")) == [None, "NE"]


def test_density_not_evaluable_still_allows_pr_by_size() -> None:
    assert choi_of(visit(t("T1", 50, 70)), visit(t("T1", 44, 120), phase="arterial")) == [None, "PR"]


@pytest.mark.parametrize("size", [50, 60])
def test_density_not_evaluable_makes_sd_or_pd_ne(size: int) -> None:
    assert choi_of(visit(t("T1", 50, 70)), visit(t("T1", size, 120), phase="arterial")) == [None, "NE"]


def test_missing_hu_or_non_positive_baseline_density_is_not_evaluable() -> None:
    assert choi_of(visit(t("T1", 50, None)), visit(t("T1", 50, 60))) == [None, "NE"]
    assert choi_of(visit(t("T1", 50, 0)), visit(t("T1", 50, 0))) == [None, "NE"]


def test_unenhanced_ct_density_is_not_evaluable() -> None:
    tl = timeline(visit(t("T1", 50, 40)), visit(t("T1", 50, 30), contrast=False), **GIST)
    records = tl.baseline.lesions, tl.timepoints[1].lesions
    density = choi.paired_density(tl.baseline, tl.timepoints[1], *records, tl.options.choi_density_phase)
    assert not density.evaluable
    assert density.reason is not None and "contrast" in density.reason


def test_density_is_the_unweighted_mean_of_lesion_means() -> None:
    # (80 + 40) / 2 = 60 -> (80 + 22) / 2 = 51: exactly -15 %; an area-weighted mean would not reach it.
    visits = (visit(t("T1", 40, 80), t("T2", 30, 40)), visit(t("T1", 40, 80), t("T2", 30, 22)))
    assert choi_of(*visits) == [None, "PR"]


def test_all_targets_gone_is_cr_but_pr_with_a_persisting_non_target() -> None:
    gone = lesion("T1", 0, status="disappeared")
    assert choi_of(visit(t("T1", 40, 60)), visit(gone)) == [None, "CR"]
    nt = lesion("NT1", kind="non-target", organ="lung")
    assert choi_of(visit(t("T1", 40, 60), nt), visit(gone, nt)) == [None, "PR"]


def test_pd_reference_is_the_nadir_by_default_and_baseline_as_option() -> None:
    visits = (visit(t("T1", 100, 80)), visit(t("T1", 85, 50)), visit(t("T1", 95, 75)))
    assert choi_of(*visits) == [None, "PR", "PD"]
    assert choi_of(*visits, options={"choi_pd_reference": "baseline"}) == [None, "PR", "SD"]


def test_nadir_ignores_visits_with_a_target_not_assessed() -> None:
    missing = lesion("T2", None, status="not_assessed")
    visits = (
        visit(t("T1", 50, 60), t("T2", 50, 60)),
        visit(t("T1", 10, 60), missing),  # partial sum 10 must not become the nadir
        visit(t("T1", 50, 60), t("T2", 54, 60)),
    )
    assert choi_of(*visits) == [None, "NE", "SD"]


# -- modified Choi -------------------------------------------------------------------------------------


def test_mchoi_needs_both_size_and_density() -> None:
    assert choi_of(visit(t("T1", 80, 100)), visit(t("T1", 70, 80)), modified=True) == [None, "PR"]
    assert choi_of(visit(t("T1", 80, 100)), visit(t("T1", 70, 90)), modified=True) == [None, "SD"]
    assert choi_of(visit(t("T1", 80, 100)), visit(t("T1", 80, 80)), modified=True) == [None, "SD"]


def test_mchoi_growth_with_density_drop_is_sd_not_pd() -> None:
    assert choi_of(visit(t("T1", 50, 100)), visit(t("T1", 60, 80)), modified=True) == [None, "SD"]


def test_mchoi_size_pr_without_evaluable_density_is_ne() -> None:
    assert choi_of(visit(t("T1", 80, 100)), visit(t("T1", 60, None)), modified=True) == [None, "NE"]


def test_density_phase_option_arterial_as_in_nathan() -> None:
    visits = (visit(t("T1", 80, 100), phase="arterial"), visit(t("T1", 70, 80), phase="arterial"))
    assert choi_of(*visits, modified=True) == [None, "NE"]  # default phase is portal venous
    assert choi_of(*visits, modified=True, options={"choi_density_phase": "arterial"}) == [None, "PR"]


def test_lesion_phase_overrides_timepoint_phase() -> None:
    visits = (visit(t("T1", 80, 100)), visit(t("T1", 80, 80, phase="arterial")))
    assert choi_of(*visits) == [None, "NE"]


# -- series, BOR and thresholds ------------------------------------------------------------------------


def test_result_carries_sums_density_and_reason() -> None:
    a = assess_timeline(timeline_from_dict(case(visit(t("T1", 50, 80)), visit(t("T1", 62, 40)), **GIST)))
    result = a.get(Criterion.CHOI)
    assert result is not None
    step = result.timepoints[1]
    assert step is not None
    assert step.sum_mm == 62 and step.baseline_sum_mm == 50
    assert step.density_hu == 40 and step.density_baseline_hu == 80 and step.change_density_pct == -50
    assert step.rule.startswith("choi_pr_density: density -") and step.citation.startswith("Choi H")


def test_bor_is_best_response_up_to_first_pd() -> None:
    visits = (visit(t("T1", 100, 80)), visit(t("T1", 85, 50)), visit(t("T1", 95, 75)), visit(t("T1", 60, 40)))
    a = assess_timeline(timeline_from_dict(case(*visits, **GIST)))
    result = a.get(Criterion.CHOI)
    assert result is not None
    assert result.bor is Category.PR and result.pd_index == 2


def test_sd_before_min_sd_days_does_not_count_for_bor() -> None:
    visits = (visit(t("T1", 100, 80)), visit(t("T1", 100, 80), days=21), visit(t("T1", 120, 80), days=60))
    a = assess_timeline(timeline_from_dict(case(*visits, **GIST)))
    result = a.get(Criterion.CHOI)
    assert result is not None and result.bor is Category.PD


def test_next_thresholds_size_and_density() -> None:
    visits = (
        visit(t("T1", 60, 80), t("T2", 40, 40)),
        visit(
            t(
                "T1",
                50,
                60,
            ),
            t("T2", 30, 40),
        ),
    )
    a = assess_timeline(timeline_from_dict(case(*visits, **GIST)))
    result = a.get(Criterion.CHOI)
    assert result is not None
    by = {(th.category, th.quantity): th for th in result.next_thresholds}
    assert by[(Category.PR, "target_sum_mm")] == Threshold(
        Category.PR, "<=", D(90), "target_sum_mm", by[(Category.PR, "target_sum_mm")].rule
    )
    assert by[(Category.PR, "density_hu")].value == D(51)  # 0.85 x mean(80, 40)
    assert by[(Category.PD, "target_sum_mm")].value == D(88)  # 1.1 x nadir 80
    assert by[(Category.PD, "target_sum_mm")].comparison == ">="


def test_next_threshold_pd_from_baseline_with_option() -> None:
    visits = (visit(t("T1", 100, 80)), visit(t("T1", 80, 80)))
    tl = timeline_from_dict(case(*visits, **GIST, options={"choi_pd_reference": "baseline"}))
    result = choi.assess_choi(tl)
    pd = [th for th in result.next_thresholds if th.category is Category.PD]
    assert pd[0].value == D(110)
