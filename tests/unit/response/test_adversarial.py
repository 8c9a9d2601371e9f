"""Adversarial cases written from the published rules: the core states a category only when the evidence
carries it (docs/criteria.md §1.6, §1.8, §2-§7). Each case names the rule it follows.

Citations: RECIST = Eisenhauer EA et al. Eur J Cancer 2009;45:228-247 (RECIST 1.1); RECIST FAQ = EORTC RECIST
1.1 FAQ; iRECIST = Seymour L et al. Lancet Oncol 2017;18:e143-e152; iRECIST FAQ = EORTC iRECIST FAQ; Choi =
Choi H et al. J Clin Oncol 2007;25:1753-1759; Chun = Chun YS et al. JAMA 2009;302:2338-2344.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from series_factory import alert_keys, assess, case, categories, lesion, timeline, visit

from agent.response import irecist, recist
from agent.response.model import Category, Criterion, Severity
from agent.response.parse import ValidationError, assessment_to_dict, timeline_from_dict
from agent.response.table import assess_timeline

D = Decimal
IO: dict[str, Any] = {
    "primary": "melanoma",
    "therapy": ("pembrolizumab",),
    "criteria": ("RECIST1.1", "iRECIST"),
}
GIST: dict[str, Any] = {"primary": "GIST", "therapy": ("imatinib",), "criteria": ("RECIST1.1", "Choi")}
CRLM: dict[str, Any] = {
    "primary": "CRC",
    "therapy": ("FOLFOX", "bevacizumab"),
    "criteria": ("RECIST1.1", "Chun"),
}


def t(lid: str, mm: float | str | None, **extra: Any) -> dict[str, Any]:
    return lesion(lid, mm, **extra)


def nt(lid: str, status: str = "present", **extra: Any) -> dict[str, Any]:
    return lesion(lid, kind="non-target", status=status, **extra)


def new(lid: str, mm: float | None = 12, **extra: Any) -> dict[str, Any]:
    return lesion(lid, mm, kind="new", **extra)


def rec(*visits: dict[str, Any], **kw: Any) -> list[str | None]:
    return categories(assess(*visits, **kw), Criterion.RECIST)


def alert(assessment: Any, code: str, tp: int) -> Any:
    return next(a for a in assessment.alerts if a.code == code and a.timepoint == tp)


# ======================================================================================================
# Incomplete or inconsistent evidence (docs/criteria.md §1.8)


def test_baseline_target_without_diameter_gives_ne_not_pd_against_zero() -> None:
    """RECIST §3.3: the baseline sum is the sum of the diameters of *all* targets; one unknown, the sum is."""
    a = assess(visit(t("T1", 40), t("T2", None)), visit(t("T1", 44), t("T2", 15)))
    assert categories(a, Criterion.RECIST) == [None, "NE"]
    result = a.get(Criterion.RECIST)
    assert result is not None and result.next_thresholds == ()  # no "PR at <= 0" from a 0 mm baseline
    assert alert(a, "BASELINE_TARGET_NOT_MEASURED", 0).severity is Severity.CRITICAL
    step = result.timepoints[1]
    assert step is not None and step.ne_reason is not None and "T2" in step.ne_reason


def test_baseline_target_not_assessed_never_makes_pd() -> None:
    """RECIST §3.3 (baseline sum) and §4.3.1: a missing baseline value is not 0 mm."""
    assert rec(visit(t("T1", 30), t("T2", 20, status="not_assessed")), visit(t("T1", 30), t("T2", 40))) == [
        None,
        "NE",
    ]


def test_baseline_sum_unknown_still_pd_on_an_unequivocal_new_lesion() -> None:
    """RECIST §4.3.2 / Table 1: an unequivocal new lesion is PD whatever the targets."""
    assert rec(visit(t("T1", None)), visit(t("T1", 20), new("N1"))) == [None, "PD"]


def test_baseline_sum_unknown_still_pd_on_non_target_progression() -> None:
    """RECIST Table 1: unequivocal progression of non-target disease is PD whatever the targets."""
    assert rec(visit(t("T1", None), nt("NT1")), visit(t("T1", 20), nt("NT1", "unequivocal_progression"))) == [
        None,
        "PD",
    ]


def test_baseline_sum_unknown_makes_irecist_and_choi_ne() -> None:
    """iRECIST keeps RECIST's target rules (Seymour 2017 Table 2); Choi size is the RECIST sum
    (Choi Table 3)."""
    visits = (
        visit(t("T1", 40, mean_hu=80), t("T2", None, mean_hu=70)),
        visit(t("T1", 60, mean_hu=80), t("T2", 30)),
    )
    a = assess(*visits, primary="GIST", therapy=("imatinib",), criteria=("RECIST1.1", "iRECIST", "Choi"))
    assert categories(a, Criterion.IRECIST) == [None, "NE"]
    assert categories(a, Criterion.CHOI) == [None, "NE"]


def test_partial_sum_that_meets_pd_stays_pd() -> None:
    """RECIST §4.3.1 and FAQ: assessed lesions that already meet PD give PD (missing lesions can only add)."""
    assert rec(visit(t("T1", 20), t("T2", 20)), visit(t("T1", 50), t("T2", None, status="not_assessed"))) == [
        None,
        "PD",
    ]


def test_partial_sum_never_becomes_the_nadir() -> None:
    """RECIST FAQ (nadir): only evaluable sums set the nadir; a partial 10 mm sum must not make 100 mm PD."""
    assert rec(
        visit(t("T1", 50), t("T2", 50)),
        visit(t("T1", 10), t("T2", None, status="not_assessed")),
        visit(t("T1", 50), t("T2", 50)),
    ) == [None, "NE", "SD"]


def test_coalesced_target_naming_no_lesion_is_not_counted_as_zero() -> None:
    """RECIST §4.3.1 (lesions that coalesce): the merged diameter is on the lesion named; naming none, the sum
    is unknown."""
    a = assess(
        visit(t("T1", 30), t("T2", 30)),
        visit(t("T1", None, status="coalesced", merged_into="T9"), t("T2", 40)),
    )
    assert categories(a, Criterion.RECIST) == [None, "NE"]
    assert alert(a, "LESION_RECORD_INCONSISTENT", 1).severity is Severity.CRITICAL


def test_coalesced_target_into_a_measured_target_counts_zero() -> None:
    """RECIST §4.3.1: coalesced lesions are recorded as 0 with the merged diameter on the other lesion."""
    a = assess(
        visit(t("T1", 30), t("T2", 30)),
        visit(t("T1", None, status="coalesced", merged_into="T2"), t("T2", 70)),
    )
    assert categories(a, Criterion.RECIST) == [None, "SD"]
    assert "LESION_RECORD_INCONSISTENT" not in {c for c, _ in alert_keys(a)}


def test_disappeared_target_that_carries_a_diameter_is_not_assessed() -> None:
    """RECIST §4.3.1: a disappeared target is recorded 0 mm; one that still measures 12 mm
    contradicts itself."""
    a = assess(visit(t("T1", 30), t("T2", 30)), visit(t("T1", 12, status="disappeared"), t("T2", 30)))
    assert categories(a, Criterion.RECIST) == [None, "NE"]
    assert alert(a, "LESION_RECORD_INCONSISTENT", 1).severity is Severity.CRITICAL


def test_inconsistent_record_is_a_warning_when_pd_is_decided_without_it() -> None:
    """RECIST §4.3.1 (PD from the assessed targets): the rules decide without the contradictory lesion."""
    a = assess(visit(t("T1", 30), t("T2", 30)), visit(t("T1", 12, status="disappeared"), t("T2", 80)))
    assert categories(a, Criterion.RECIST) == [None, "PD"]
    assert alert(a, "LESION_RECORD_INCONSISTENT", 1).severity is Severity.WARNING


@pytest.mark.parametrize("value", [0, -5, "0.4"])
def test_zero_negative_or_sub_millimetre_diameter_is_implausible(value: object) -> None:
    """RECIST §3.1 (measurable: >= 10 mm; too small to measure = 5 mm default): a measured 0, negative or
    sub-millimetre diameter is not a measurement."""
    a = assess(visit(t("T1", 30)), visit(t("T1", value)))
    assert categories(a, Criterion.RECIST) == [None, "NE"]
    assert alert(a, "IMPLAUSIBLE_MEASUREMENT", 1).severity is Severity.CRITICAL


def test_a_99999999_mm_diameter_yields_no_response_and_no_sum() -> None:
    """docs/criteria.md §1.8: no lesion is 100 km long; the time point is not assessed and has no sum."""
    a = assess(visit(t("T1", 30), t("T2", 20)), visit(t("T1", 99999999), t("T2", 20)))
    result = a.get(Criterion.RECIST)
    assert result is not None
    step = result.timepoints[1]
    assert step is not None and step.category is Category.NE and step.sum_mm is None
    assert step.ne_reason is not None and "implausible" in step.ne_reason
    assert ("IMPLAUSIBLE_MEASUREMENT", 1) in alert_keys(a)


def test_implausible_follow_up_does_not_hide_a_later_pd_or_set_the_nadir() -> None:
    """RECIST FAQ (nadir from evaluable visits only): the set-aside visit is skipped, the next is compared."""
    assert rec(visit(t("T1", 50)), visit(t("T1", 5000)), visit(t("T1", 62))) == [None, "NE", "PD"]


def test_plausible_range_is_configurable() -> None:
    """docs/criteria.md §1.5: plausible_max_mm raises the 400 mm default (a giant retroperitoneal
    mass)."""
    assert rec(visit(t("T1", 420)), visit(t("T1", 430))) == [None, "NE"]
    assert rec(visit(t("T1", 420)), visit(t("T1", 430)), options={"plausible_max_mm": 600}) == [None, "SD"]


def test_implausible_baseline_leaves_every_follow_up_unassessed() -> None:
    """RECIST §3.3: every response is relative to the baseline sum; an implausible baseline has none."""
    a = assess(visit(t("T1", 1000)), visit(t("T1", 30)), visit(t("T1", 20)))
    assert categories(a, Criterion.RECIST) == [None, "NE", "NE"]
    assert ("IMPLAUSIBLE_MEASUREMENT", 0) in alert_keys(a)


def test_every_target_tenfold_smaller_reads_as_a_cm_mm_slip() -> None:
    """docs/criteria.md §1.8 [P]: 45 and 30 mm recorded as 4.5 and 3.0 is a unit slip, not a 90 % response."""
    a = assess(visit(t("T1", 45), t("T2", 30)), visit(t("T1", "4.5"), t("T2", "3.0")))
    assert categories(a, Criterion.RECIST) == [None, "NE"]
    assert ("IMPLAUSIBLE_MEASUREMENT", 1) in alert_keys(a)


def test_every_target_tenfold_larger_reads_as_a_cm_mm_slip() -> None:
    """docs/criteria.md §1.8 [P]: a tenfold growth of every target in eight weeks is a unit slip, not PD."""
    assert rec(visit(t("T1", "4.5"), t("T2", "3.1")), visit(t("T1", 45), t("T2", 31))) == [None, "NE"]


def test_a_single_lesion_shrinking_tenfold_is_a_response_not_a_slip() -> None:
    """RECIST §4.3.1: a genuine response can shrink one lesion from 50 to 5 mm; it stays PR."""
    assert rec(visit(t("T1", 50)), visit(t("T1", 5))) == [None, "PR"]


def test_slip_visit_is_skipped_when_comparing_the_next_one() -> None:
    """RECIST FAQ (nadir): the set-aside visit never becomes the nadir, so the next visit is SD, not PD."""
    assert rec(
        visit(t("T1", 45), t("T2", 30)),
        visit(t("T1", "4.4"), t("T2", "3.0")),
        visit(t("T1", 47), t("T2", 31)),
    ) == [None, "NE", "SD"]


@pytest.mark.parametrize("organ", ["LN", "lymph node", "Lymph Nodes", "node", "SCT:59441001", "30746006"])
def test_node_organ_spellings_make_a_node_without_is_node(organ: str) -> None:
    """RECIST §4.3.1 (lymph nodes): a target node is CR below 10 mm short axis, so its
    spelling must not matter."""
    tl = timeline(
        visit({"id": "N1", "organ": organ, "kind": "target", "short_axis_mm": 20, "long_axis_mm": 30}),
        visit({"id": "N1", "organ": organ, "kind": "target", "short_axis_mm": 8, "long_axis_mm": 12}),
    )
    assert tl.baseline.lesions[0].is_node and tl.baseline.lesions[0].organ == "lymph_node"
    result = recist.assess(tl)
    assert [c.value if c else None for c in result.categories()] == [None, "CR"]


def test_new_node_below_10mm_short_axis_is_not_new_disease_whatever_its_spelling() -> None:
    """RECIST FAQ (new lymph node lesions): a new node counts only from 10 mm short axis."""
    small = {"id": "X1", "organ": "LN", "kind": "new", "short_axis_mm": 8}
    assert rec(visit(t("T1", 30)), visit(t("T1", 30), small)) == [None, "SD"]


def test_new_lesion_with_a_baseline_id_is_never_new_disease() -> None:
    """RECIST §4.3.2: a new lesion must be new; a record labelled new carrying baseline target
    T1's id is T1."""
    a = assess(visit(t("T1", 30), t("T2", 30)), visit(new("T1", 31), t("T2", 30)))
    assert categories(a, Criterion.RECIST) == [None, "SD"]
    assert alert(a, "NEW_LESION_PREVIOUSLY_SEEN", 1).severity is Severity.CRITICAL


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (
            lambda d: d["timepoints"][1]["lesions"][0].update(long_axis_cm=4.1),
            "timepoints[1].lesions[0].long_axis_cm",
        ),
        (lambda d: d["timepoints"][0].update(thickness=5), "timepoints[0].thickness"),
        (lambda d: d["options"].update(confirm=True), "options.confirm"),
        (lambda d: d["context"].update(treatment_start_date="2024-01-15"), "context.treatment_start_date"),
        (
            lambda d: d["timepoints"][1]["lesions"].append(dict(d["timepoints"][1]["lesions"][0])),
            "timepoints[1].lesions[1].id",
        ),
    ],
)
def test_unknown_keys_and_duplicate_ids_are_input_errors_naming_the_field(mutate: Any, path: str) -> None:
    """docs/criteria.md §1.8: a misspelt or unit-suffixed field is never silently dropped."""
    data = case(visit(t("T1", 30)), visit(t("T1", 32)))
    mutate(data)
    with pytest.raises(ValidationError) as err:
        timeline_from_dict(data)
    assert str(err.value).startswith(path)


# ======================================================================================================
# The baseline is the one the rules name (docs/criteria.md §1.6)


def test_latest_scan_before_treatment_is_the_baseline_and_earlier_growth_is_not_pd() -> None:
    """RECIST §3.2: baseline as close as possible to the treatment start; pre-treatment growth is not PD."""
    a = assess(visit(t("T1", 30), days=-60), visit(t("T1", 40), days=-7), visit(t("T1", 41), days=49))
    assert categories(a, Criterion.RECIST) == [None, None, "SD"]
    result = a.get(Criterion.RECIST)
    assert result is not None and result.baseline_sum_mm == D(40)
    out = assessment_to_dict(a)["recist"]
    assert out["timepoint_roles"] == ["history", "baseline", "follow-up"]


def test_pre_treatment_history_is_never_a_choi_or_irecist_progression() -> None:
    """iRECIST and Choi compare with the baseline (Seymour 2017; Choi 2007), so growth before treatment is
    history."""
    visits = (
        visit(t("T1", 30, mean_hu=80), days=-90),
        visit(t("T1", 45, mean_hu=80), days=-3),
        visit(t("T1", 44, mean_hu=79), days=53),
    )
    a = assess(*visits, primary="GIST", therapy=("imatinib",), criteria=("RECIST1.1", "iRECIST", "Choi"))
    assert categories(a, Criterion.IRECIST) == [None, None, "iSD"]
    assert categories(a, Criterion.CHOI) == [None, None, "SD"]


def test_baseline_older_than_the_window_is_still_the_baseline_with_a_warning() -> None:
    """RECIST §3.2: "never more than 4 weeks before the beginning of the treatment"."""
    a = assess(visit(t("T1", 30), days=-40), visit(t("T1", 31), days=49))
    assert ("BASELINE_TOO_EARLY", 0) in alert_keys(a)
    b = assess(
        visit(t("T1", 30), days=-40), visit(t("T1", 31), days=49), options={"baseline_window_days": 42}
    )
    assert ("BASELINE_TOO_EARLY", 0) not in alert_keys(b)


def test_baseline_too_early_alert_is_at_the_chosen_baseline() -> None:
    """RECIST §3.2: the warning concerns the scan used as the baseline, not the oldest scan."""
    a = assess(visit(t("T1", 30), days=-90), visit(t("T1", 30), days=-45), visit(t("T1", 31), days=49))
    assert ("BASELINE_TOO_EARLY", 1) in alert_keys(a) and ("BASELINE_TOO_EARLY", 0) not in alert_keys(a)


def test_without_treatment_start_the_first_scan_is_the_baseline_with_a_note() -> None:
    """RECIST §3.2: without a treatment start the first scan is the only candidate; the result says so."""
    data = case(visit(t("T1", 30)), visit(t("T1", 40)))
    data["context"]["treatment_start"] = None
    result = recist.assess(timeline_from_dict(data))
    assert [c.value if c else None for c in result.categories()] == [None, "PD"]
    assert any("first scan is the baseline" in n for n in result.notes)


def test_all_scans_after_treatment_start_first_is_baseline_with_critical_alert() -> None:
    """RECIST §3.2: a baseline after treatment start may already show treatment effect."""
    a = assess(visit(t("T1", 30), days=3), visit(t("T1", 31), days=59))
    assert categories(a, Criterion.RECIST) == [None, "SD"]
    assert alert(a, "BASELINE_AFTER_TREATMENT_START", 0).severity is Severity.CRITICAL


# ======================================================================================================
# iRECIST (Seymour 2017 Tables 2-3; iRECIST FAQ)


def test_icpd_is_confirmed_like_for_like_not_full_sum_against_partial() -> None:
    """iRECIST FAQ (confirmation: a further increase of >= 5 mm in the target sum): a full later sum is not
    compared with an earlier partial one."""
    a = assess(
        visit(t("T1", 20), t("T2", 20)),
        visit(t("T1", 50), t("T2", None, status="not_assessed")),
        visit(t("T1", 51), t("T2", 20)),
        **IO,
    )
    assert categories(a, Criterion.IRECIST) == [None, "iUPD", "iUPD"]


def test_icpd_from_a_partial_sum_already_five_mm_larger() -> None:
    """RECIST §4.3.1 (missing lesions can only add) with iRECIST Table 2 (>= 5 mm further increase)."""
    a = assess(
        visit(t("T1", 20), t("T2", 20)),
        visit(t("T1", 30), t("T2", 30)),
        visit(t("T1", 70), t("T2", None, status="not_assessed")),
        **IO,
    )
    assert categories(a, Criterion.IRECIST) == [None, "iUPD", "iCPD"]


def test_partial_sum_that_could_hide_shrinkage_does_not_confirm() -> None:
    """iRECIST FAQ: a +10 mm on one target with the other unassessed may be no increase at all."""
    a = assess(
        visit(t("T1", 20), t("T2", 20)),
        visit(t("T1", 30), t("T2", 30)),
        visit(t("T1", 40), t("T2", None, status="not_assessed")),
        **IO,
    )
    assert categories(a, Criterion.IRECIST) == [None, "iUPD", "NE"]


def test_scenario_b_shrinkage_meeting_pr_resets_a_new_lesion_iupd() -> None:
    """iRECIST FAQ scenario B: new lesion (iUPD), then further shrinkage of the targets meeting PR -> iPR."""
    a = assess(visit(t("T1", 100)), visit(t("T1", 80), new("N1")), visit(t("T1", 60), new("N1")), **IO)
    assert categories(a, Criterion.IRECIST) == [None, "iUPD", "iPR"]


def test_pr_persisting_from_before_the_iupd_does_not_reset() -> None:
    """iRECIST FAQ scenarios B and F: only shrinkage that itself meets PR resets; -25 % held up by PR
    persistence is not it."""
    a = assess(
        visit(t("T1", 100)),
        visit(t("T1", 70)),
        visit(t("T1", 80), new("N1")),
        visit(t("T1", 75), new("N1")),
        **IO,
    )
    assert categories(a, Criterion.RECIST)[1:3] == ["PR", "PD"]
    assert categories(a, Criterion.IRECIST) == [None, "iPR", "iUPD", "iUPD"]


def test_unequivocal_progression_of_new_non_target_lesions_confirms_icpd() -> None:
    """iRECIST Table 2 / FAQ: iCPD when new non-target lesions progress unequivocally."""
    a = assess(
        visit(t("T1", 50)),
        visit(t("T1", 50), new("N1", new_category="non-target")),
        visit(t("T1", 50), new("N1", status="unequivocal_progression", new_category="non-target")),
        **IO,
    )
    assert categories(a, Criterion.IRECIST) == [None, "iUPD", "iCPD"]


def test_unequivocal_progression_of_new_non_targets_re_triggers_iupd_after_a_reset() -> None:
    """iRECIST FAQ (how new lesions define progression after a reset): NLNT unequivocal
    progression is iUPD."""
    a = assess(
        visit(t("T1", 100)),
        visit(t("T1", 80), new("N1", new_category="non-target")),
        visit(t("T1", 60), new("N1", new_category="non-target")),
        visit(t("T1", 60), new("N1", status="unequivocal_progression", new_category="non-target")),
        **IO,
    )
    assert categories(a, Criterion.IRECIST) == [None, "iUPD", "iPR", "iUPD"]


def test_iupd_then_inn_is_a_pseudoprogression_pattern() -> None:
    """Seymour 2017 Table 2 (iNN = non-target-only disease): iUPD followed by iNN is not confirmed
    progression."""
    a = assess(
        visit(nt("NT1")),
        visit(nt("NT1"), new("N1")),
        visit(nt("NT1"), new("N1", status="absent")),
        **IO,
    )
    assert categories(a, Criterion.IRECIST) == [None, "iUPD", "iNN"]
    assert ("DISC_PSEUDOPROGRESSION", 2) in alert_keys(a)


def test_open_iupd_says_what_would_confirm_or_reset_it() -> None:
    """Seymour 2017: the confirming scan is 4-8 weeks later and needs >= 5 mm more; the result states it."""
    tl = timeline(visit(t("T1", 40)), visit(t("T1", 50)), **IO)
    step = irecist.assess(tl).timepoints[1]
    assert step is not None and step.category is Category.IUPD
    assert step.state is not None and "iUPD open since FU1" in step.state
    assert step.next_step is not None and ">= 55 mm" in step.next_step and "reset" in step.next_step


# ======================================================================================================
# RECIST after CR, and confirmation of the overall response


def test_after_an_overall_cr_the_next_read_pd_threshold_is_any_reappearance() -> None:
    """RECIST FAQ (reappearance after CR): any reappearance is PD, not "+5 mm"."""
    result = recist.assess(timeline(visit(t("T1", 20)), visit(t("T1", 0, status="disappeared"))))
    assert [c.value if c else None for c in result.categories()] == [None, "CR"]
    pd = [th for th in result.next_thresholds if th.category is Category.PD]
    assert {(th.comparison, th.value, th.quantity) for th in pd} == {(">", D(0), "non_nodal_target_mm")}
    assert not [th for th in result.next_thresholds if th.category is Category.PR]


def test_after_an_overall_cr_with_a_target_node_its_threshold_is_10mm_short_axis() -> None:
    """RECIST FAQ (reappearance after CR): a target node is PD again from 10 mm short axis."""
    node = {"id": "N1", "organ": "lymph node", "kind": "target", "short_axis_mm": 18}
    back = {"id": "N1", "organ": "lymph node", "kind": "target", "short_axis_mm": 7}
    result = recist.assess(timeline(visit(t("T1", 20), node), visit(t("T1", 0, status="disappeared"), back)))
    assert [c.value if c else None for c in result.categories()] == [None, "CR"]
    assert {(th.comparison, th.value, th.quantity) for th in result.next_thresholds} == {
        (">", D(0), "non_nodal_target_mm"),
        (">=", D(10), "target_node_short_axis_mm"),
    }


def test_before_a_cr_the_next_read_thresholds_are_the_sum_rules() -> None:
    """RECIST §4.3.1: PD at +20 % and +5 mm over the nadir, PR at -30 % against baseline."""
    result = recist.assess(timeline(visit(t("T1", 50)), visit(t("T1", 40))))
    by = {th.category: th.value for th in result.next_thresholds}
    assert by == {Category.PD: D(48), Category.PR: D(35)}


def test_a_4mm_reappearance_after_cr_is_pd() -> None:
    """RECIST FAQ (reappearance after CR): PD regardless of the 20 % / 5 mm rule."""
    assert rec(visit(t("T1", 20)), visit(t("T1", 0, status="disappeared")), visit(t("T1", 4))) == [
        None,
        "CR",
        "PD",
    ]


def test_confirmation_is_of_the_overall_response() -> None:
    """RECIST Table 3: PR must be confirmed as an overall response; a target PR at a visit that is overall PD
    confirms nothing, so PR does not persist afterwards."""
    tl = timeline(
        visit(t("T1", 100), nt("NT1")),
        visit(t("T1", 60), nt("NT1")),
        visit(t("T1", 60), nt("NT1", "unequivocal_progression")),
        visit(t("T1", 71), nt("NT1", "unequivocal_progression")),
        options={"confirmation_required": True},
    )
    result = recist.assess(tl)
    assert [tp.target.value if tp else None for tp in result.timepoints] == [None, "PR", "PR", "SD"]
    assert result.bor is Category.SD  # PR unconfirmed, then PD; the PR visit is >= 42 days


def test_confirmed_overall_pr_then_persists() -> None:
    """RECIST Table 3 with the EORTC FAQ persistence: a confirmed PR stays PR until PD."""
    tl = timeline(
        visit(t("T1", 100)),
        visit(t("T1", 60)),
        visit(t("T1", 62)),
        visit(t("T1", 71)),
        options={"confirmation_required": True},
    )
    result = recist.assess(tl)
    assert [c.value if c else None for c in result.categories()] == [None, "PR", "PR", "PR"]
    assert result.bor is Category.PR


# ======================================================================================================
# Choi (Choi 2007 Table 3)


def test_choi_regrowth_over_the_nadir_is_pd_while_still_10_percent_below_baseline() -> None:
    """Choi 2007 Table 3, PD row: >= 10 % size increase that does not meet PR by density; only a density PR
    exempts it, not a size PR against baseline."""
    a = assess(
        visit(t("T1", 100, mean_hu=80)),
        visit(t("T1", 70, mean_hu=78)),
        visit(t("T1", 80, mean_hu=80)),
        **GIST,
    )
    assert categories(a, Criterion.CHOI) == [None, "PR", "PD"]


def test_choi_density_pr_still_exempts_regrowth_from_pd() -> None:
    """Choi 2007 Table 3: PD needs "does not meet criteria of PR by tumor density"."""
    a = assess(
        visit(t("T1", 100, mean_hu=80)),
        visit(t("T1", 70, mean_hu=78)),
        visit(t("T1", 80, mean_hu=50)),
        **GIST,
    )
    assert categories(a, Criterion.CHOI) == [None, "PR", "PR"]


def test_choi_regrowth_with_density_not_evaluable_is_ne() -> None:
    """Choi 2007 Table 3: without density a density PR cannot be ruled out, so PD cannot be stated."""
    a = assess(
        visit(t("T1", 100, mean_hu=80)),
        visit(t("T1", 70, mean_hu=78)),
        visit(t("T1", 80)),
        **GIST,
    )
    assert categories(a, Criterion.CHOI) == [None, "PR", "NE"]


def test_choi_regrowth_against_baseline_reference_is_still_size_pr() -> None:
    """Choi 2007 compared with the pre-treatment scan; with choi_pd_reference=baseline -20 % is PR."""
    a = assess(
        visit(t("T1", 100, mean_hu=80)),
        visit(t("T1", 70, mean_hu=78)),
        visit(t("T1", 80, mean_hu=80)),
        options={"choi_pd_reference": "baseline"},
        **GIST,
    )
    assert categories(a, Criterion.CHOI) == [None, "PR", "PR"]


def test_mchoi_regrowth_over_the_nadir_is_pd() -> None:
    """Nathan 2010 keeps Choi's PD row: >= 10 % growth without a density PR is PD."""
    a = assess(
        visit(t("T1", 100, mean_hu=80)),
        visit(t("T1", 70, mean_hu=60)),
        visit(t("T1", 80, mean_hu=75)),
        primary="RCC",
        therapy=("sunitinib",),
        criteria=("RECIST1.1", "mChoi"),
    )
    assert categories(a, Criterion.MCHOI) == [None, "PR", "PD"]


def test_choi_density_is_averaged_over_the_targets_measured_at_both_visits() -> None:
    """Choi 2007 (mean density of the target lesions): a disappeared target no longer makes density NE."""
    a = assess(
        visit(t("T1", 10, mean_hu=90), t("T2", 100, mean_hu=100)),
        visit(t("T1", 0, status="disappeared"), t("T2", 108, mean_hu=80)),
        **GIST,
    )
    assert categories(a, Criterion.CHOI) == [None, "PR"]
    result = a.get(Criterion.CHOI)
    assert result is not None
    step = result.timepoints[1]
    assert step is not None and step.density_hu == D(80) and step.density_baseline_hu == D(100)
    assert any("T2" in n and "left out: T1" in n for n in step.notes)
    assert [(d.lesion_id, d.used) for d in step.lesions] == [("T1", False), ("T2", True)]


def test_choi_target_without_hu_at_follow_up_is_left_out_of_the_mean_and_named() -> None:
    """Choi 2007: density from the targets measured; the note says which were used."""
    a = assess(
        visit(t("T1", 50, mean_hu=90), t("T2", 50, mean_hu=100)),
        visit(t("T1", 52), t("T2", 51, mean_hu=98)),
        **GIST,
    )
    assert categories(a, Criterion.CHOI) == [None, "SD"]
    result = a.get(Criterion.CHOI)
    assert result is not None and result.timepoints[1] is not None
    assert any("left out: T1" in n for n in result.timepoints[1].notes)


# ======================================================================================================
# Chun (Chun 2009)


def test_chun_baseline_group_1_lesion_does_not_make_the_patient_ne() -> None:
    """Chun 2009: response is a change of morphology group; a lesion already group 1 has none to make."""
    a = assess(
        visit(t("T1", 30, chun_group=1), t("T2", 40, chun_group=3)),
        visit(t("T1", 30, chun_group=1), t("T2", 35, chun_group=1)),
        **CRLM,
    )
    assert categories(a, Criterion.CHUN) == [None, "optimal"]


def test_chun_baseline_group_1_lesion_that_worsens_counts_as_no_response() -> None:
    """Chun 2009: group 1 -> 3 is no morphologic response; the worst lesion decides [P]."""
    a = assess(
        visit(t("T1", 30, chun_group=1), t("T2", 40, chun_group=3)),
        visit(t("T1", 30, chun_group=3), t("T2", 35, chun_group=1)),
        **CRLM,
    )
    assert categories(a, Criterion.CHUN) == [None, "none"]


def test_chun_disappeared_lesion_counts_as_optimal() -> None:
    """Chun 2009 (optimal = no residual abnormal morphology); the disappeared-on-CT alert still fires."""
    a = assess(
        visit(t("T1", 30, chun_group=3), t("T2", 40, chun_group=2)),
        visit(t("T1", 0, status="disappeared"), t("T2", 35, chun_group=1)),
        **CRLM,
    )
    assert categories(a, Criterion.CHUN) == [None, "optimal"]
    assert ("DLM_CT_DISAPPEARED_LIVER_LESION", 1) in alert_keys(a)
    result = a.get(Criterion.CHUN)
    assert result is not None and result.timepoints[1] is not None
    groups = {(d.lesion_id, d.baseline, d.current) for d in result.timepoints[1].lesions}
    assert groups == {("T1", D(3), None), ("T2", D(2), D(1))}


@pytest.mark.parametrize(
    "attenuation", ["homogeneous_hypoattenuating", "homogeneous", "homogeneous and hypoattenuating"]
)
def test_chun_attenuation_follows_the_paper_and_accepts_both_spellings(attenuation: str) -> None:
    """Chun 2009 Table: group 1 = "homogeneous and hypoattenuating", thin sharp interface, no rim."""
    g1 = {"chun_attenuation": attenuation, "chun_interface": "sharp", "chun_rim": "absent"}
    g3 = {"chun_attenuation": "heterogeneous", "chun_interface": "poorly_defined", "chun_rim": "present"}
    a = assess(visit(t("T1", 30, **g3)), visit(t("T1", 28, **g1)), **CRLM)
    assert categories(a, Criterion.CHUN) == [None, "optimal"]


def test_chun_every_lesion_group_1_at_baseline_is_ne_with_the_reason() -> None:
    """Chun 2009: nothing can improve, so no morphologic response can be stated."""
    a = assess(visit(t("T1", 30, chun_group=1)), visit(t("T1", 30, chun_group=1)), **CRLM)
    result = a.get(Criterion.CHUN)
    assert result is not None and result.timepoints[1] is not None
    assert result.timepoints[1].category is Category.NE
    assert "group 1 at baseline" in (result.timepoints[1].ne_reason or "")


# ======================================================================================================
# Every result explains itself (docs/criteria.md §1.7)


def test_json_states_rule_reference_sums_and_change_per_time_point() -> None:
    """RECIST §4.3.1: PD is measured from the nadir; the result names it with its date and visit label."""
    a = assess(visit(t("T1", 50)), visit(t("T1", 30)), visit(t("T1", 37)))
    out = assessment_to_dict(a)["recist"]
    explained = out["explanations"][2]
    assert explained["reference"] == {
        "kind": "nadir",
        "label": "FU1",
        "date": a.get(Criterion.RECIST).timepoints[2].reference_date.isoformat(),
        "sum_mm": 30,
    }  # type: ignore[union-attr]
    assert explained["sum_mm"] == 37 and explained["baseline"]["sum_mm"] == 50
    assert explained["change_vs_reference_pct"] == pytest.approx(23.3, abs=0.05)
    assert explained["citation"] and "PD" in explained["rule"]
    assert out["timepoint_responses"] == [None, "PR", "PD"]


def test_json_choi_explanation_has_per_lesion_and_mean_density() -> None:
    """Choi 2007 Table 3: density PR is a >= 15 % decrease of the mean target HU; the figures are shown."""
    a = assess(
        visit(t("T1", 50, mean_hu=80), t("T2", 30, mean_hu=60)),
        visit(t("T1", 52, mean_hu=40), t("T2", 31, mean_hu=30)),
        **GIST,
    )
    explained = assessment_to_dict(a)["choi"]["explanations"][1]
    assert explained["density"]["mean_hu"] == 35 and explained["density"]["baseline_mean_hu"] == 70
    assert explained["density"]["change_pct"] == -50
    assert [(les["id"], les["baseline"], les["current"]) for les in explained["lesions"]] == [
        ("T1", 80, 40),
        ("T2", 60, 30),
    ]


def test_json_irecist_explanation_has_state_and_next_step() -> None:
    """Seymour 2017: an open iUPD needs confirmation; the JSON says how."""
    a = assess(visit(t("T1", 40)), visit(t("T1", 50)), **IO)
    explained = assessment_to_dict(a)["irecist"]["explanations"][1]
    assert "iUPD open" in explained["state"] and "iCPD" in explained["next_step"]


def test_every_followup_of_every_criterion_carries_rule_and_citation() -> None:
    """docs/criteria.md §1.7: no category without the rule and citation behind it."""
    tl = timeline(
        visit(t("T1", 50, mean_hu=80, chun_group=3)),
        visit(t("T1", 40, mean_hu=60, chun_group=2)),
        primary="CRC",
        therapy=("bevacizumab",),
        criteria=("RECIST1.1", "iRECIST", "Choi", "mChoi", "Chun"),
    )
    for result in assess_timeline(tl).results:
        step = result.timepoints[1]
        assert step is not None and step.rule and step.citation, result.criterion


def test_two_records_with_one_id_built_outside_the_parser_make_the_lesion_not_assessed() -> None:
    """RECIST §4.3.1: one value per target; two records for T1 (e.g. from two SR groups) cannot both be it."""
    from dataclasses import replace

    tl = timeline(visit(t("T1", 30), t("T2", 30)), visit(t("T1", 31), t("T2", 30)))
    fu = tl.timepoints[1]
    doubled = replace(fu, lesions=(*fu.lesions, replace(fu.lesions[0], long_axis_mm=D(90))))
    tl = replace(tl, timepoints=(tl.timepoints[0], doubled))
    a = assess_timeline(tl)
    assert categories(a, Criterion.RECIST) == [None, "NE"]
    assert alert(a, "LESION_RECORD_INCONSISTENT", 1).severity is Severity.CRITICAL
