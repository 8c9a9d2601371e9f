"""mRECIST (Lencioni & Llovet 2010) and EASL (Bruix 2001): viable-tumour response of hepatocellular carcinoma.

Both measure only the arterially enhancing (viable) part of each target: mRECIST sums its longest diameter,
EASL sums the bidimensional products. They are defined for HCC only: for any other primary every follow-up is
``NA`` (the alert rules raise ``CRITERION_NOT_APPLICABLE``). The overall table is RECIST's (docs/criteria.md
§5-§6). Exact ``Decimal`` arithmetic, thresholds inclusive. Never imports anything but the standard library
and ``agent.response``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from agent.response import recist
from agent.response.model import (
    Category,
    Criterion,
    CriterionResult,
    Lesion,
    LesionStatus,
    Threshold,
    Timeline,
    TimepointAssessment,
)
from agent.response.registry import build_registry

CITATION_MRECIST = "Lencioni R, Llovet JM. Semin Liver Dis 2010;30:52-60 (mRECIST)"
CITATION_EASL = "Bruix J et al. J Hepatol 2001;35:421-430 (EASL)"

#: Default viable diameter of a target present but too small to measure (RECIST 1.1 convention) [P].
TOO_SMALL_MM = Decimal(5)

_HUNDRED = Decimal(100)
_GONE_STATUSES = frozenset({LesionStatus.DISAPPEARED, LesionStatus.COALESCED})  # no viable tumour left


def is_hcc(timeline: Timeline) -> bool:
    """mRECIST and EASL apply to hepatocellular carcinoma only (docs/criteria.md §5.1)."""
    return timeline.context.primary.strip().upper() == "HCC"


# ------------------------------------------------------------------------------------------------------
# Per-target viable quantity


def viable_diameter(lesion: Lesion) -> Decimal | None:
    """mRECIST value of a target: longest diameter of the enhancing part (0 when no enhancement remains).

    ``None`` (not assessed) when the viable diameter is missing, e.g. no arterial phase.
    """
    status = lesion.status
    if status is LesionStatus.NOT_ASSESSED:
        return None
    if status in _GONE_STATUSES:
        return Decimal(0)
    if lesion.viable_long_axis_mm is not None:
        return lesion.viable_long_axis_mm
    if status is LesionStatus.TOO_SMALL:
        return TOO_SMALL_MM
    return None


def viable_product(lesion: Lesion) -> Decimal | None:
    """EASL value of a target: product of the enhancing part's two perpendicular diameters (mm²)."""
    status = lesion.status
    if status is LesionStatus.NOT_ASSESSED:
        return None
    if status in _GONE_STATUSES:
        return Decimal(0)
    long_axis, perpendicular = lesion.viable_long_axis_mm, lesion.viable_perp_axis_mm
    if long_axis is not None and long_axis == 0:
        return Decimal(0)
    if long_axis is not None and perpendicular is not None:
        return long_axis * perpendicular
    if status is LesionStatus.TOO_SMALL:
        return TOO_SMALL_MM * TOO_SMALL_MM
    return None


# ------------------------------------------------------------------------------------------------------
# Threshold rules (cross-multiplied, inclusive)


def mrecist_pr(viable: Decimal, baseline: Decimal) -> bool:
    """mRECIST PR: viable sum at least 30 % below baseline (``10·V <= 7·V0``)."""
    return 10 * viable <= 7 * baseline


def mrecist_pd(viable: Decimal, nadir: Decimal, require_5mm: bool) -> bool:
    """mRECIST PD: viable sum at least 20 % above the nadir (``5·V >= 6·V_nadir``).

    The 2010 paper has no absolute 5 mm requirement (MR-03); ``mrecist_require_5mm`` adds RECIST 1.1's.
    A zero nadir makes any positive sum an infinite increase.
    """
    relative = viable > 0 if nadir == 0 else 5 * viable >= 6 * nadir
    return relative and (not require_5mm or viable - nadir >= 5)


def easl_pr(area: Decimal, baseline: Decimal) -> bool:
    """EASL PR: viable product sum at least 50 % below baseline (``2·A <= A0``)."""
    return 2 * area <= baseline


def easl_pd(area: Decimal, nadir: Decimal) -> bool:
    """EASL PD: viable product sum at least 25 % above the nadir (``4·A >= 5·A_nadir``)."""
    return area > 0 if nadir == 0 else 4 * area >= 5 * nadir


# ------------------------------------------------------------------------------------------------------
# Target response and series


@dataclass(frozen=True, slots=True)
class _Rules:
    criterion: Criterion
    value: Callable[[Lesion], Decimal | None]
    pr: Callable[[Decimal, Decimal], bool]
    pd: Callable[[Decimal, Decimal], bool]
    citation: str
    name: str
    unit: str
    require_5mm: bool = False


def viable_sums(
    timeline: Timeline, value: Callable[[Lesion], Decimal | None]
) -> list[tuple[Decimal | None, Decimal]]:
    """``(sum, partial sum)`` of the viable quantity over the baseline targets at every time point.

    The sum is ``None`` when a target is missing or not assessed; the partial sum adds the assessed ones.
    """
    return [
        recist.target_sum([value(r) if r is not None else None for r in records])
        for records in build_registry(timeline).target_records
    ]


def viable_target_response(
    current: Decimal | None, partial: Decimal, baseline: Decimal, nadir: Decimal, rules: _Rules
) -> tuple[Category, str]:
    """Target response on the viable quantity: CR at 0, PD vs nadir before PR vs baseline, else SD.

    With a target not assessed, PD can still be established from the assessed ones; otherwise NE (as RECIST
    §2.4 / §2.11 with the viable values).
    """
    if current is None:
        if rules.pd(partial, nadir) and partial > 0:
            return Category.PD, f"{rules.name}_pd_partial_sum"
        return Category.NE, f"{rules.name}_target_not_assessed"
    if current == 0:
        return Category.CR, f"{rules.name}_cr_no_viable_tumour"
    if rules.pd(current, nadir):
        return Category.PD, f"{rules.name}_pd"
    if rules.pr(current, baseline):
        return Category.PR, f"{rules.name}_pr"
    return Category.SD, f"{rules.name}_sd"


def overall_from_parts(target: Category, non_target: Category, new_lesion: bool) -> Category:
    """RECIST 1.1 Tables 1-2 applied to the viable-tumour target response (docs/criteria.md §5)."""
    if new_lesion or target is Category.PD or non_target is Category.PD:
        return Category.PD
    if target is Category.NONE:
        if non_target is Category.NONE:
            return Category.NE
        return non_target
    if target is Category.NE:
        return Category.NE
    if target is Category.CR:
        return Category.CR if non_target in (Category.CR, Category.NONE) else Category.PR
    return target


def _not_applicable(timeline: Timeline, rules: _Rules) -> CriterionResult:
    primary = timeline.context.primary
    reason = f"{rules.criterion.value} is defined for hepatocellular carcinoma only (primary {primary})"
    followups = tuple(
        TimepointAssessment(
            index=i,
            date=tp.date,
            category=Category.NA,
            target=Category.NA,
            non_target=Category.NA,
            ne_reason=reason,
            rule=f"{rules.name}_hcc_only",
            citation=rules.citation,
        )
        for i, tp in enumerate(timeline.timepoints)
        if i in timeline.followups
    )
    return CriterionResult(
        criterion=rules.criterion,
        timepoints=(*([None] * (timeline.baseline_index + 1)), *followups),
        bor=Category.NA,
        bor_rule=reason,
        applicable=False,
        notes=(reason,),
    )


def _pct(value: Decimal | None, reference: Decimal | None) -> Decimal | None:
    if value is None or reference is None or reference == 0:
        return None
    return (value - reference) * _HUNDRED / reference


def _assess(timeline: Timeline, rules: _Rules) -> CriterionResult:
    if not is_hcc(timeline):
        return _not_applicable(timeline, rules)
    sums = viable_sums(timeline, rules.value)
    registry = build_registry(timeline)
    b = registry.baseline_index
    baseline = sums[b][0]
    has_targets = bool(registry.targets)
    rec = recist.assess(timeline)  # non-target and new-lesion categories are RECIST's
    followups: list[TimepointAssessment] = []
    low, low_index = baseline, b  # nadir: smallest complete viable sum so far (NE visits never set it)
    for index in timeline.followups:
        current, partial = sums[index]
        nadir, nadir_index = low, low_index
        if current is not None and low is not None and current < low:
            low, low_index = current, index
        step = rec.timepoints[index]
        assert step is not None
        non_target, new_lesion = step.non_target, step.new_lesion
        ne_reason: str | None = None
        excluded = registry.exclusion(index)
        if excluded is not None:
            target, rule, ne_reason = Category.NE, f"{rules.name}_not_assessed", excluded
        elif not has_targets:
            target, rule = Category.NONE, f"{rules.name}_no_targets"
        elif baseline is None or nadir is None:
            target, rule = Category.NE, f"{rules.name}_baseline_not_measured"
            ne_reason = f"a baseline target has no viable {rules.unit} measurement"
        else:
            target, rule = viable_target_response(current, partial, baseline, nadir, rules)
            if target is Category.NE:
                ne_reason = "a target's viable (arterially enhancing) part was not assessed"
        category = overall_from_parts(target, non_target, new_lesion)
        compared = has_targets and nadir is not None and excluded is None
        if category is Category.PD and target is not Category.PD:
            rule = f"{rules.name}_pd_new_lesion" if new_lesion else f"{rules.name}_pd_non_target"
            ne_reason = None
        elif category is Category.NE and ne_reason is None:
            ne_reason = (
                "non-target lesions not assessed" if target is Category.NONE else "target not evaluable"
            )
        followups.append(
            TimepointAssessment(
                index=index,
                date=timeline.timepoints[index].date,
                category=category,
                target=target,
                non_target=non_target,
                new_lesion=new_lesion,
                sum_mm=current,
                partial_sum_mm=partial if current is None else None,
                baseline_sum_mm=baseline,
                nadir_sum_mm=nadir,
                change_vs_baseline_pct=_pct(current, baseline),
                change_vs_nadir_pct=_pct(current, nadir),
                ne_reason=ne_reason,
                rule=rule,
                citation=rules.citation,
                reference="nadir" if compared else None,
                reference_index=nadir_index if compared else None,
                reference_date=timeline.timepoints[nadir_index].date if compared else None,
                reference_label=timeline.label(nadir_index) if compared else None,
            )
        )
    return _result(timeline, rules, tuple(followups), baseline)


def _result(
    timeline: Timeline, rules: _Rules, followups: tuple[TimepointAssessment, ...], baseline: Decimal | None
) -> CriterionResult:
    bor, pd_index = best_response(timeline, followups)
    return CriterionResult(
        criterion=rules.criterion,
        timepoints=(*([None] * (timeline.baseline_index + 1)), *followups),
        bor=bor,
        bor_rule="best response up to the first PD without confirmation; SD counts from min_sd_days [P]",
        pd_date=timeline.timepoints[pd_index].date if pd_index is not None else None,
        pd_index=pd_index,
        baseline_sum_mm=baseline,
        next_thresholds=next_thresholds(rules, baseline, followups),
    )


def best_response(
    timeline: Timeline, followups: tuple[TimepointAssessment, ...]
) -> tuple[Category, int | None]:
    """BOR without confirmation (RECIST 1.1 rule reused) up to the first PD: CR > PR > SD > PD > NE [P]."""
    seen: list[TimepointAssessment] = []
    pd_index: int | None = None
    for tp in followups:
        seen.append(tp)
        if tp.category is Category.PD:
            pd_index = tp.index
            break
    categories = [tp.category for tp in seen]
    if Category.CR in categories:
        return Category.CR, pd_index
    if Category.PR in categories:
        return Category.PR, pd_index
    start = timeline.context.treatment_start
    for tp in seen:
        days = (tp.date - start).days if start is not None else 0
        if tp.category in (Category.SD, Category.NON_CR_NON_PD) and days >= timeline.options.min_sd_days:
            return tp.category, pd_index
    if pd_index is not None:
        return Category.PD, pd_index
    return Category.NE, None


def next_thresholds(
    rules: _Rules, baseline: Decimal | None, followups: tuple[TimepointAssessment, ...]
) -> tuple[Threshold, ...]:
    """Viable sums at which the next read would be PR (vs baseline) or PD (vs the nadir so far)."""
    if baseline is None:
        return ()
    nadir = min([baseline, *(tp.sum_mm for tp in followups if tp.sum_mm is not None)])
    quantity = "viable_sum_mm" if rules.criterion is Criterion.MRECIST else "viable_area_mm2"
    if rules.criterion is Criterion.MRECIST:
        pr_value, pr_text = baseline * 7 / 10, "at least 30 % below"
        pd_value, pd_text = nadir * 6 / 5, "at least 20 % above"
        if rules.require_5mm and nadir + 5 > pd_value:
            pd_value, pd_text = nadir + 5, "at least 5 mm above"
    else:
        pr_value, pr_text = baseline / 2, "at least 50 % below"
        pd_value, pd_text = nadir * 5 / 4, "at least 25 % above"
    out = [
        Threshold(Category.PR, "<=", pr_value, quantity, f"{rules.criterion.value} PR: {pr_text} baseline")
    ]
    if nadir == 0:
        out.append(
            Threshold(Category.PD, ">", nadir, quantity, f"{rules.criterion.value} PD: any viable tumour")
        )
    else:
        out.append(
            Threshold(Category.PD, ">=", pd_value, quantity, f"{rules.criterion.value} PD: {pd_text} nadir")
        )
    return tuple(out)


def assess_mrecist(timeline: Timeline) -> CriterionResult:
    """mRECIST response at every follow-up (HCC only; ``NA`` otherwise)."""
    require_5mm = timeline.options.mrecist_require_5mm
    rules = _Rules(
        Criterion.MRECIST,
        viable_diameter,
        mrecist_pr,
        lambda v, n: mrecist_pd(v, n, require_5mm),
        CITATION_MRECIST,
        "mrecist",
        "diameter",
        require_5mm,
    )
    return _assess(timeline, rules)


def assess_easl(timeline: Timeline) -> CriterionResult:
    """EASL response at every follow-up (HCC only; ``NA`` otherwise)."""
    rules = _Rules(Criterion.EASL, viable_product, easl_pr, easl_pd, CITATION_EASL, "easl", "bidimensional")
    return _assess(timeline, rules)
