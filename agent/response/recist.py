"""RECIST 1.1 (Eisenhauer 2009; Schwartz 2016; EORTC RECIST FAQ) as docs/criteria.md §2 states it.

Small pure functions named after the rules (``target_value``, ``pd_test``, ``target_response``,
``non_target_response``, ``overall_response``, ``best_overall_response``, ``next_thresholds``) and
``assess(timeline)`` that chains them over a series. Exact ``Decimal`` arithmetic: every ratio is compared by
cross-multiplication and every threshold is inclusive (docs/criteria.md §1.4). Never imports anything
outside the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from agent.response.model import (
    Category,
    Criterion,
    CriterionResult,
    Lesion,
    LesionStatus,
    Options,
    PrPersistence,
    Threshold,
    Timeline,
    TimepointAssessment,
)
from agent.response.registry import Registry, build_registry

ZERO = Decimal(0)
FIVE = Decimal(5)
TEN = Decimal(10)
HUNDRED = Decimal(100)
TOO_SMALL_MM = Decimal(5)  # "present but too small to measure" default [V]
CONFIRM_DAYS = 28
_GONE_STATUSES = frozenset({LesionStatus.DISAPPEARED, LesionStatus.COALESCED})  # value 0

CITE_TARGET = "RECIST 1.1 (Eisenhauer 2009) §4.3.1; EORTC RECIST FAQ"
CITE_NON_TARGET = "RECIST 1.1 (Eisenhauer 2009) §4.3.3"
CITE_NEW = "RECIST 1.1 (Eisenhauer 2009) §4.3.2; Schwartz 2016"
CITE_OVERALL = "RECIST 1.1 (Eisenhauer 2009) Tables 1-2"
CITE_REAPPEARANCE = "EORTC RECIST FAQ (reappearance after CR)"
CITE_BOR = "RECIST 1.1 (Eisenhauer 2009) §4.4, Table 3"


# --------------------------------------------------------------------------------------------------------
# Target lesions (docs/criteria.md §2.3-§2.4)


def target_value(lesion: Lesion | None) -> Decimal | None:
    """Contribution of one target to the sum; ``None`` when it was not assessed (docs/criteria.md §2.3)."""
    if lesion is None:
        return None
    if lesion.fragments_mm:
        return sum(lesion.fragments_mm, ZERO)
    status = lesion.status
    if status is LesionStatus.MEASURED:
        return lesion.short_axis_mm if lesion.is_node else lesion.long_axis_mm
    if status in _GONE_STATUSES:
        return ZERO
    if status is LesionStatus.TOO_SMALL:
        return TOO_SMALL_MM
    if status is LesionStatus.NOT_ASSESSED:
        return None
    return lesion.short_axis_mm if lesion.is_node else lesion.long_axis_mm


def target_sum(values: Sequence[Decimal | None]) -> tuple[Decimal | None, Decimal]:
    """(S_t, P_t): the sum over all baseline targets (``None`` if any is missing) and the partial sum."""
    partial = ZERO
    complete = True
    for v in values:
        if v is None:
            complete = False
        else:
            partial += v
    return (partial if complete else None), partial


def targets_disappeared(targets: Sequence[Lesion], values: Sequence[Decimal | None]) -> bool:
    """Target CR test: every non-nodal target 0 and every nodal target < 10 mm short axis."""
    for base, v in zip(targets, values, strict=True):
        if v is None:
            return False
        if base.is_node:
            if v >= TEN:
                return False
        elif v != ZERO:
            return False
    return True


def pd_test(current: Decimal, nadir: Decimal) -> bool:
    """RECIST PD of a sum: >= +20 % vs the nadir (infinite when the nadir is 0) and >= +5 mm absolute."""
    relative = current > ZERO if nadir == ZERO else 5 * current >= 6 * nadir
    return relative and current - nadir >= FIVE


def pr_test(current: Decimal, baseline: Decimal) -> bool:
    """RECIST PR of a sum: >= 30 % decrease vs the baseline sum (10·S <= 7·S0)."""
    return 10 * current <= 7 * baseline


def nadir(baseline_sum: Decimal, earlier_sums: Sequence[Decimal | None]) -> Decimal:
    """Smallest sum so far, baseline included; NE visits (``None``) never set the nadir (R11-37)."""
    low = baseline_sum
    for s in earlier_sums:
        if s is not None and s < low:
            low = s
    return low


def percent_change(current: Decimal | None, reference: Decimal | None) -> Decimal | None:
    """Exact percentage change (display only; decisions use cross-multiplication). ``None`` if undefined."""
    if current is None or reference is None or reference == ZERO:
        return None
    return (current - reference) * HUNDRED / reference


def target_response(
    current: Decimal | None,
    partial: Decimal,
    baseline_sum: Decimal,
    nadir_sum: Decimal,
    all_disappeared: bool,
    persist_pr: bool,
) -> tuple[Category, str]:
    """docs/criteria.md §2.4: (category, rule). ``persist_pr``: PR persistence applies here (§2.6)."""
    if current is None:
        if pd_test(partial, nadir_sum):
            return (
                Category.PD,
                f"target PD from the assessed targets alone: partial sum {partial} vs nadir {nadir_sum}",
            )
        return Category.NE, f"a target was not assessed (partial sum {partial}) and PD is not established"
    if all_disappeared:
        return Category.CR, "target CR: all non-nodal targets gone and every target node < 10 mm"
    if pd_test(current, nadir_sum):
        return Category.PD, f"target PD: {current} mm >= +20 % and >= +5 mm vs nadir {nadir_sum} mm"
    if pr_test(current, baseline_sum):
        return Category.PR, f"target PR: {current} mm <= -30 % vs baseline {baseline_sum} mm"
    if persist_pr:
        return Category.PR, f"target PR persists until PD (EORTC FAQ): {current} mm, nadir {nadir_sum} mm"
    return (
        Category.SD,
        f"target SD: {current} mm, neither -30 % vs baseline {baseline_sum} nor PD vs nadir {nadir_sum}",
    )


# --------------------------------------------------------------------------------------------------------
# Non-target lesions (docs/criteria.md §2.5), reappearance (§2.8) and the overall table (§2.9)


def non_target_absent(lesion: Lesion) -> bool:
    """A non-target counts as absent when recorded absent, or a node 'present' below 10 mm short axis."""
    status = lesion.status
    if status is LesionStatus.ABSENT:
        return True
    return (
        lesion.is_node
        and status is LesionStatus.PRESENT
        and lesion.short_axis_mm is not None
        and lesion.short_axis_mm < TEN
    )


def non_target_response(records: Sequence[Lesion | None]) -> Category:
    """docs/criteria.md §2.5 over the records of the baseline non-targets at one time point: PD when any shows
    unequivocal progression, else NE when any is missing or not assessed, else CR when all are absent."""
    if not records:
        return Category.NONE
    evaluable = True
    all_absent = True
    for r in records:
        if r is None:
            evaluable = False
        elif r.status is LesionStatus.UNEQUIVOCAL_PROGRESSION:
            return Category.PD
        elif r.status is LesionStatus.NOT_ASSESSED:
            evaluable = False
        elif all_absent and not non_target_absent(r):
            all_absent = False
    if not evaluable:
        return Category.NE
    return Category.CR if all_absent else Category.NON_CR_NON_PD


def reappearance(
    targets: Sequence[Lesion], values: Sequence[Decimal | None], nt_records: Sequence[Lesion | None]
) -> bool:
    """docs/criteria.md §2.8: a non-nodal target > 0, a target node >= 10 mm, or a non-target again."""
    for base, v in zip(targets, values, strict=True):
        if v is None:
            continue
        if (base.is_node and v >= TEN) or (not base.is_node and v > ZERO):
            return True
    for r in nt_records:
        if r is None or r.status is LesionStatus.NOT_ASSESSED:
            continue
        if not non_target_absent(r):
            return True
    return False


def overall_response(
    target: Category, non_target: Category, new_lesion: bool, reappeared_after_cr: bool
) -> tuple[Category, str]:
    """docs/criteria.md §2.9 (RECIST 1.1 Tables 1 and 2): (category, rule)."""
    if new_lesion:
        return Category.PD, "unequivocal new lesion"
    if target is Category.PD:
        return Category.PD, "target PD"
    if non_target is Category.PD:
        return Category.PD, "unequivocal progression of non-target disease"
    if reappeared_after_cr:
        return Category.PD, "reappearance of disease after an overall CR"
    if target is Category.NE:
        return Category.NE, "not all targets evaluated"
    if target is Category.CR:
        if non_target in (Category.CR, Category.NONE):
            return Category.CR, "target CR and non-target CR/none"
        return Category.PR, f"target CR with non-target {non_target.value}"
    if target is Category.PR:
        return Category.PR, "target PR, non-target not PD"
    if target is Category.SD:
        return Category.SD, "target SD, non-target not PD"
    # non-target disease only (Table 2)
    if non_target is Category.CR:
        return Category.CR, "non-target CR (non-target disease only)"
    if non_target is Category.NON_CR_NON_PD:
        return Category.NON_CR_NON_PD, "non-target non-CR/non-PD (non-target disease only)"
    if non_target is Category.NE:
        return Category.NE, "non-target not evaluated (non-target disease only)"
    return Category.NE, "no baseline disease and no new lesion"


# --------------------------------------------------------------------------------------------------------
# Best overall response (docs/criteria.md §2.10)


def _days(a: date, b: date) -> int:
    return (b - a).days


def _confirmed(
    cats: Sequence[Category], dates: Sequence[date], i: int, accepted: frozenset[Category]
) -> bool:
    """``cats[i]`` is followed by an ``accepted`` category >= 28 days later (NE skipped, others break)."""
    for j in range(i + 1, len(cats)):
        if cats[j] is Category.NE:
            continue
        if cats[j] not in accepted:
            return False
        if _days(dates[i], dates[j]) >= CONFIRM_DAYS:
            return True
    return False


_CR = frozenset({Category.CR})
_PR_CR = frozenset({Category.PR, Category.CR})
_STABLE = frozenset({Category.SD, Category.NON_CR_NON_PD})


def best_overall_response(
    cats: Sequence[Category], dates: Sequence[date], start: date, options: Options
) -> tuple[Category, str]:
    """BOR over the follow-up categories up to and including the first PD (later ones must be cut off)."""
    sd_days = options.min_sd_days
    if not options.confirmation_required:
        if Category.CR in cats:
            return Category.CR, "a CR was observed"
        if Category.PR in cats:
            return Category.PR, "a PR was observed"
        for c, d in zip(cats, dates, strict=True):
            if c in _STABLE and _days(start, d) >= sd_days:
                return c, f"{c.value} observed >= {sd_days} days after treatment start"
        if cats and cats[-1] is Category.PD:
            return Category.PD, "progression without an earlier qualifying response or stable disease"
        return Category.NE, "no evaluable qualifying response"
    for i, c in enumerate(cats):
        if c is Category.CR and _confirmed(cats, dates, i, _CR):
            return Category.CR, "CR confirmed >= 28 days later"
    for i, c in enumerate(cats):
        if c in _PR_CR and _confirmed(cats, dates, i, _PR_CR):
            return Category.PR, "PR/CR confirmed >= 28 days later"
    for c, d in zip(cats, dates, strict=True):
        if (
            c in (Category.CR, Category.PR, Category.SD, Category.NON_CR_NON_PD)
            and _days(start, d) >= sd_days
        ):
            stable = Category.NON_CR_NON_PD if c is Category.NON_CR_NON_PD else Category.SD
            return stable, f"unconfirmed response or stable disease >= {sd_days} days after treatment start"
    if cats and cats[-1] is Category.PD:
        return Category.PD, "progression without an earlier qualifying response or stable disease"
    return Category.NE, "no evaluable qualifying response"


def next_thresholds(
    baseline_sum: Decimal, nadir_sum: Decimal, after_cr: bool = False, target_nodes: bool = True
) -> tuple[Threshold, ...]:
    """Target sums at which the next read changes category: PD at >= max(1.2 x nadir, nadir + 5 mm),
    PR at <= 0.7 x baseline. After an overall CR any reappearance is PD (docs/criteria.md §2.8): a non-nodal
    target above 0 mm, a non-target again, or (``target_nodes``) a target node from 10 mm short axis."""
    if after_cr:
        reappearance = Threshold(
            Category.PD,
            ">",
            ZERO,
            "non_nodal_target_mm",
            "PD after CR: any reappearance of a non-nodal target or a non-target lesion",
        )
        node = Threshold(
            Category.PD,
            ">=",
            TEN,
            "target_node_short_axis_mm",
            "PD after CR: a target node with a short axis of 10 mm or more",
        )
        return (reappearance, node) if target_nodes else (reappearance,)
    pd_at = FIVE if nadir_sum == ZERO else max(nadir_sum * Decimal("1.2"), nadir_sum + FIVE)
    return (
        Threshold(
            Category.PD, ">=", pd_at, "target_sum_mm", f"PD: >= +20 % and >= +5 mm vs nadir {nadir_sum} mm"
        ),
        Threshold(
            Category.PR,
            "<=",
            baseline_sum * Decimal("0.7"),
            "target_sum_mm",
            f"PR: <= -30 % vs baseline {baseline_sum} mm",
        ),
    )


# --------------------------------------------------------------------------------------------------------
# The series


def _new_lesion_confirmed_later(registry: Registry, t: int) -> bool:
    """An equivocal new lesion at ``t`` that a later scan shows unequivocally (so PD is back-dated to it)."""
    equivocal = {les.id for les in registry.equivocal_new(t)}
    if not equivocal:
        return False
    for k in range(t + 1, len(registry.new_records)):
        if any(les.id in equivocal for les in registry.unequivocal_new(k)):
            return True
    return False


def _ne_reason(
    excluded: str | None, no_imaging: bool, target: Category, non_target: Category, target_reason: str
) -> str:
    """Why an overall response is NE."""
    if excluded is not None:
        return excluded
    if no_imaging:
        return "no imaging at this time point"
    if target is Category.NE:
        return target_reason
    if non_target is Category.NE:
        return "non-target lesion(s) not assessed"
    return "no baseline disease"


def assess(timeline: Timeline) -> CriterionResult:
    """RECIST 1.1 over a series: per follow-up the target, non-target, new, overall (provisional and final),
    then BOR, PD date and the thresholds for the next read.

    The final response differs from the provisional one only where an equivocal new lesion seen at that
    time point is confirmed later: PD is then back-dated to it (docs/criteria.md §2.7). The registry knows
    the whole series, so both are decided in the same pass. Time points before the baseline are history and
    stay ``None``; a time point the evidence checks set aside is NE with their reason (§1.8).
    """
    options = timeline.options
    tps = timeline.timepoints
    registry = build_registry(timeline)
    b = registry.baseline_index
    targets = registry.targets
    has_targets = bool(targets)
    baseline_values = tuple(target_value(les) for les in targets)
    baseline_sum, _ = target_sum(baseline_values)
    baseline_unknown = registry.baseline_sum_unknown() if has_targets else None
    strict = options.pr_persistence is PrPersistence.STRICT
    start = timeline.context.treatment_start or timeline.baseline.date
    baseline_label = timeline.label(b)

    low = baseline_sum  # nadir: smallest complete sum so far, baseline included; NE visits never set it
    low_index = b
    overall_cats: list[Category] = []  # evaluable (non-NE) provisional overall responses, with their dates
    overall_dates: list[date] = []
    last_target: Category | None = None  # last evaluable target response
    last_overall: Category | None = None  # last evaluable provisional overall response
    pr_confirmed = False
    first_pd: int | None = None
    final: list[TimepointAssessment | None] = [None] * (b + 1)
    for t in timeline.followups:
        tp = tps[t]
        excluded = registry.exclusion(t)
        values = tuple([target_value(r) for r in registry.target_records[t]])
        current, partial = target_sum(values)
        nadir_sum, nadir_index = low, low_index
        if excluded is not None or baseline_sum is None:
            current = None
        if current is not None and low is not None and current < low:
            low, low_index = current, t
        missing = tuple(les.id for les, v in zip(targets, values, strict=True) if v is None)
        target_reason = f"target(s) not assessed: {', '.join(missing)}"
        if not has_targets:
            t_cat, t_rule = Category.NONE, "no target lesion at baseline"
        elif excluded is not None:
            t_cat, t_rule = Category.NE, f"time point not assessed: {excluded}"
        elif baseline_sum is None or nadir_sum is None:
            t_cat, t_rule = Category.NE, f"the baseline sum is unknown ({baseline_unknown})"
            target_reason = f"the baseline sum is unknown: {baseline_unknown}"
        else:
            persist = not strict and last_target in _PR_CR
            if persist and options.confirmation_required:
                persist = pr_confirmed
            t_cat, t_rule = target_response(
                current, partial, baseline_sum, nadir_sum, targets_disappeared(targets, values), persist
            )
        nt_records = registry.non_target_records[t]
        nt_cat = (
            non_target_response(nt_records)
            if excluded is None
            else (Category.NE if registry.non_targets else Category.NONE)
        )
        new_unequivocal = bool(registry.unequivocal_new(t))
        reappeared = (
            excluded is None and last_overall is Category.CR and reappearance(targets, values, nt_records)
        )
        no_imaging = not tp.lesions
        if excluded is not None:
            provisional, rule = Category.NE, f"not assessed: {excluded}"
        elif no_imaging and not new_unequivocal:
            provisional, rule = Category.NE, "no imaging at this time point"
        else:
            provisional, rule = overall_response(t_cat, nt_cat, new_unequivocal, reappeared)
        if reappeared and provisional is Category.PD and rule.startswith("reappearance"):
            rule += " (the earlier CR may not have been genuine)"
        if provisional is not Category.NE:
            last_overall = provisional
            overall_cats.append(provisional)
            overall_dates.append(tp.date)
            if options.confirmation_required and not pr_confirmed and provisional in _PR_CR:
                # RECIST 1.1 Table 3: confirmation is of the overall response
                pr_confirmed = any(
                    overall_cats[i] in _PR_CR and _confirmed(overall_cats, overall_dates, i, _PR_CR)
                    for i in range(len(overall_cats) - 1)
                )
        if t_cat is not Category.NE and t_cat is not Category.NONE:
            last_target = t_cat
        if has_targets and excluded is None:
            rule = f"{rule}; {t_rule}"
        citation = CITE_REAPPEARANCE if reappeared and provisional is Category.PD else CITE_OVERALL
        category = provisional
        backdated = provisional is not Category.PD and _new_lesion_confirmed_later(registry, t)
        if backdated:
            category = Category.PD
            rule = f"PD back-dated: the equivocal new lesion seen here was confirmed later; {rule}"
            citation = CITE_NEW
        compared = has_targets and baseline_sum is not None and excluded is None
        final.append(
            TimepointAssessment(
                index=t,
                date=tp.date,
                category=category,
                target=t_cat,
                non_target=nt_cat,
                new_lesion=new_unequivocal,
                sum_mm=current if has_targets else None,
                partial_sum_mm=partial if compared and current is None else None,
                baseline_sum_mm=baseline_sum if has_targets else None,
                nadir_sum_mm=nadir_sum if compared else None,
                change_vs_baseline_pct=percent_change(current, baseline_sum) if has_targets else None,
                change_vs_nadir_pct=percent_change(current, nadir_sum) if has_targets else None,
                ne_reason=_ne_reason(excluded, no_imaging, t_cat, nt_cat, target_reason)
                if provisional is Category.NE
                else None,
                rule=rule,
                citation=citation,
                provisional_category=provisional,
                missing_targets=missing if compared and current is None else (),
                reappearance_after_cr=reappeared and provisional is Category.PD,
                post_pd=first_pd is not None,
                backdated=backdated,
                notes=_EQUIVOCAL_NOTE if registry.equivocal_new(t) else (),
                reference="nadir" if compared else None,
                reference_index=nadir_index if compared else None,
                reference_date=tps[nadir_index].date if compared else None,
                reference_label=timeline.label(nadir_index) if compared else None,
            )
        )
        if first_pd is None and category is Category.PD:
            first_pd = t

    window = [
        s for s in final[b + 1 : (first_pd + 1 if first_pd is not None else len(final))] if s is not None
    ]
    bor, bor_rule = best_overall_response(
        [s.category for s in window], [s.date for s in window], start, options
    )
    notes = ["RECIST CR of non-target disease also needs normal tumour markers (outside this tool)."]
    if b > 0:
        notes.append(
            f"Baseline: {baseline_label} ({tps[b].date}), the latest scan on or before treatment start; "
            f"{b} earlier scan(s) are pre-treatment history, not assessed."
        )
    elif timeline.context.treatment_start is None:
        notes.append("No treatment start given: the first scan is the baseline.")
    if baseline_unknown is not None:
        notes.append(f"No size-based response: {baseline_unknown}.")
    thresholds: tuple[Threshold, ...] = ()
    if has_targets and baseline_sum is not None and low is not None:
        thresholds = next_thresholds(
            baseline_sum,
            low,
            after_cr=last_overall is Category.CR,
            target_nodes=any(les.is_node for les in targets),
        )
    return CriterionResult(
        criterion=Criterion.RECIST,
        timepoints=tuple(final),
        bor=bor,
        bor_rule=bor_rule,
        pd_date=tps[first_pd].date if first_pd is not None else None,
        pd_index=first_pd,
        baseline_sum_mm=baseline_sum if has_targets else None,
        next_thresholds=thresholds,
        notes=tuple(notes),
    )


_EQUIVOCAL_NOTE = ("equivocal new lesion: confirm at the next scan",)
