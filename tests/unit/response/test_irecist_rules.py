"""iRECIST state machine (docs/criteria.md §3): confirmation, additivity, reset, windows and iBOR."""

from __future__ import annotations

from recist_factories import new, non_target, target, timeline

from agent.response import irecist
from agent.response.model import Category

IR = ("RECIST1.1", "iRECIST")


def _cats(tl: object) -> list[str | None]:
    return [c.value if c else None for c in irecist.assess(tl).categories()]  # type: ignore[arg-type]


def two(a: float, b: float, *extra: dict[str, object]) -> list[dict[str, object]]:
    return [target("T1", a), target("T2", b, organ="lung"), *extra]


def test_new_lesion_gives_iupd_not_pd() -> None:
    tl = timeline(two(30, 20), two(29, 19, new("N1")), criteria=IR)
    assert _cats(tl) == [None, "iUPD"]


def test_increases_are_additive_across_visits() -> None:
    tl = timeline(two(30, 20), two(38, 24), two(40, 26), two(41, 27), days=[-7, 49, 91, 133], criteria=IR)
    assert _cats(tl) == [None, "iUPD", "iUPD", "iCPD"]


def test_scenario_f_new_lesion_after_pr_without_change_stays_iupd() -> None:
    tl = timeline(two(30, 20), two(18, 12), two(18, 12, new("N1")), two(18, 12, new("N1")), criteria=IR)
    assert _cats(tl) == [None, "iPR", "iUPD", "iUPD"]


def test_category_not_in_the_iupd_progressing_confirms() -> None:
    tl = timeline(
        two(30, 20, non_target("NT1")),
        two(29, 19, non_target("NT1"), new("N1")),
        two(29, 19, non_target("NT1", "unequivocal_progression"), new("N1")),
        criteria=IR,
    )
    assert _cats(tl) == [None, "iUPD", "iCPD"]


def test_non_target_iupd_confirmed_by_any_further_increase() -> None:
    tl = timeline(
        two(30, 20, non_target("NT1")),
        two(30, 20, non_target("NT1", "unequivocal_progression")),
        two(30, 20, non_target("NT1", "present", increased_since_prior=True)),
        criteria=IR,
    )
    assert _cats(tl) == [None, "iUPD", "iCPD"]


def test_ne_visits_keep_the_episode_open_and_ibor_is_iupd() -> None:
    tl = timeline(
        two(30, 20),
        two(38, 24),
        [target("T1", 40), target("T2", None, organ="lung", status="not_assessed")],
        criteria=IR,
    )
    result = irecist.assess(tl)
    assert _cats(tl) == [None, "iUPD", "NE"]
    assert result.bor is Category.IUPD


def test_early_unscheduled_scan_with_an_additional_new_lesion_confirms() -> None:
    data = timeline(two(30, 20), two(38, 24), two(38, 24, new("N2")), days=[-7, 49, 63], criteria=IR)
    assert _cats(data) == [None, "iUPD", "iUPD"]  # scheduled-looking scan after 14 days cannot confirm
    from recist_factories import case

    from agent.response.parse import timeline_from_dict

    raw = case(two(30, 20), two(38, 24), two(38, 24, new("N2")), days=[-7, 49, 63], criteria=IR)
    raw["timepoints"][2]["unscheduled_for_symptoms"] = True
    assert _cats(timeline_from_dict(raw)) == [None, "iUPD", "iCPD"]


def test_visits_after_icpd_stay_icpd_and_do_not_count_for_ibor() -> None:
    tl = timeline(two(30, 20), two(38, 24), two(41, 26), two(10, 5), criteria=IR)
    result = irecist.assess(tl)
    assert _cats(tl) == [None, "iUPD", "iCPD", "iCPD"]
    assert result.bor is Category.ICPD and result.pd_index == 2


def test_ibor_counts_responses_after_an_unconfirmed_iupd() -> None:
    tl = timeline(
        two(30, 20),
        two(38, 24),
        two(20, 14),
        [target("T1", 0, status="disappeared"), target("T2", 0, organ="lung", status="disappeared")],
        criteria=IR,
    )
    assert _cats(tl) == [None, "iUPD", "iPR", "iCR"]
    assert irecist.assess(tl).bor is Category.ICR


def test_persisting_new_lesion_turns_icr_into_ipr() -> None:
    gone = [target("T1", 0, status="disappeared"), target("T2", 0, organ="lung", status="disappeared")]
    tl = timeline(two(30, 20), two(24, 16, new("N1")), [*gone, new("N1")], criteria=IR)
    # the new lesion opens an episode; further shrinkage of the targets to CR (scenario B) resets the bar,
    # but the new disease persists: iPR, not iCR
    assert _cats(tl) == [None, "iUPD", "iPR"]
