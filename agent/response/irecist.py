"""iRECIST (Seymour 2017, Tables 2-3; EORTC iRECIST FAQ) as docs/criteria.md §3 states it.

The RECIST 1.1 target and non-target categories (same nadir, same PR persistence) drive a state machine:
an unconfirmed progression (iUPD) opens an episode that the next assessment confirms (iCPD), keeps open
(iUPD, NE) or closes by resetting the bar (iSD/iPR/iCR/iNN). New lesions give iUPD, never PD; new-lesion
targets (NLT) are summed separately from the baseline targets. Pure; never imports outside the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal

from agent.response import recist
from agent.response.model import (
    Category,
    Criterion,
    CriterionResult,
    Lesion,
    LesionStatus,
    NewCategory,
    Options,
    Timeline,
    TimepointAssessment,
)
from agent.response.recist import pd_test
from agent.response.registry import build_registry

ZERO = Decimal(0)
FIVE = Decimal(5)
EARLIEST_CONFIRMATION_DAYS = 28 - 2  # 4 weeks, with the FAQ's tolerance of 2 days
CITATION = "iRECIST (Seymour 2017, Lancet Oncol 18:e143) Tables 2-3; EORTC iRECIST FAQ"

TARGET, NON_TARGET, NEW = "target", "nontarget", "new"

_I_OF = {
    Category.CR: Category.ICR,
    Category.PR: Category.IPR,
    Category.SD: Category.ISD,
    Category.NON_CR_NON_PD: Category.INN,
    Category.NE: Category.NE,
}


@dataclass(frozen=True, slots=True)
class Episode:
    """An open (unconfirmed) iUPD: what triggered it and the reference measures at its first visit.

    ``ref_values`` keeps each baseline target's value at the first iUPD (``None``: not assessed there), so
    the confirmation compares like for like (docs/criteria.md §3.3).
    """

    cats: frozenset[str]
    ref_values: tuple[Decimal | None, ...]
    ref_nlt: Decimal
    ref_date: date
    index: int
    label: str


def like_for_like(
    ref_values: Sequence[Decimal | None], values: Sequence[Decimal | None]
) -> tuple[Decimal, Decimal, int, int]:
    """(reference sum, current sum, targets compared, targets missing now) over the targets assessed at the
    first iUPD. A target missing at the first iUPD is left out of both sums; a target missing now counts as
    0, so the current sum is a lower bound (a missing lesion can only add) and never overstates growth."""
    ref = now = ZERO
    used = missing_now = 0
    for a, b in zip(ref_values, values, strict=True):
        if a is None:
            continue
        ref += a
        used += 1
        if b is None:
            missing_now += 1
        else:
            now += b
    return ref, now, used, missing_now


def nlt_sum(new_lesions: Sequence[Lesion]) -> Decimal:
    """Sum of measures of the new-lesion targets (never added to the baseline target sum)."""
    total = ZERO
    for les in new_lesions:
        if les.new_category is NewCategory.TARGET and les.status is not LesionStatus.ABSENT:
            d = les.diameter_mm
            if d is not None:
                total += d
    return total


def recist_like(target: Category, non_target: Category, new_disease_persists: bool) -> tuple[Category, str]:
    """iCR/iPR/iSD/iNN/NE from the RECIST table; persisting earlier new lesions turn iCR into iPR."""
    if target is Category.NE or (target is Category.NONE and non_target in (Category.NE, Category.NONE)):
        return Category.NE, "not all target (or non-target) lesions evaluated"
    if target is Category.NONE:
        base = Category.CR if non_target is Category.CR else Category.NON_CR_NON_PD
    elif target is Category.CR:
        base = Category.CR if non_target in (Category.CR, Category.NONE) else Category.PR
    else:
        base = target
    if base is Category.CR and new_disease_persists:
        return Category.IPR, "complete response of baseline disease but earlier new lesions persist"
    category = _I_OF[base]
    return (
        category,
        f"{category} per the RECIST 1.1 table (target {target}, non-target {non_target})",  # StrEnum values
    )


def confirms_progression(
    episode: Episode,
    target: Category,
    non_target: Category,
    values: Sequence[Decimal | None],
    nlt_now: Decimal,
    nt_increased: bool,
    nlnt_increased: bool,
    nlnt_unequivocal: bool,
    additional_new: bool,
) -> str | None:
    """The reason the open iUPD is confirmed at this visit, or ``None`` (docs/criteria.md §3.3).

    The target increase is cumulative since the first iUPD and compared like for like: a target missing
    now can only add to today's sum, so a partial sum that already shows +5 mm confirms; a target missing at
    the first iUPD is left out of both sums (never a later full sum against an earlier partial one).
    """
    if TARGET in episode.cats:
        ref, now, used, missing_now = like_for_like(episode.ref_values, values)
        left = len(values) - used
        if used and now - ref >= FIVE:
            scope = []
            if left:
                scope.append(f"like for like over {used} target(s) assessed at the first iUPD")
            if missing_now:
                scope.append(f"{missing_now} not assessed now (can only add)")
            detail = f" ({'; '.join(scope)})" if scope else ""
            return f"target sum +{now - ref} mm (>= 5 mm) since the first iUPD{detail}"
    if NON_TARGET in episode.cats and nt_increased:
        return "further increase of non-target disease after a non-target iUPD"
    if NEW in episode.cats and nlt_now - episode.ref_nlt >= FIVE:
        return f"new-lesion target sum +{nlt_now - episode.ref_nlt} mm (>= 5 mm) since the first iUPD"
    if NEW in episode.cats and nlnt_increased:
        return "increase of new non-target lesions"
    if nlnt_unequivocal:
        return "unequivocal progression of new non-target lesions"
    if additional_new:
        return "additional new lesion(s)"
    if TARGET not in episode.cats and target is Category.PD:
        return "target PD in a category that was not part of the iUPD"
    if NON_TARGET not in episode.cats and non_target is Category.PD:
        return "non-target PD in a category that was not part of the iUPD"
    return None


def _confirm_if(episode: Episode) -> str:
    """What would confirm the open iUPD at the next assessment (docs/criteria.md §3.3)."""
    parts: list[str] = []
    if TARGET in episode.cats:
        ref = sum((v for v in episode.ref_values if v is not None), ZERO)
        parts.append(f"target sum >= {ref + FIVE} mm (+5 mm over {ref} mm at {episode.label}, like for like)")
    if NON_TARGET in episode.cats:
        parts.append("any further increase of non-target disease")
    if NEW in episode.cats:
        parts.append(
            f"new-lesion target sum >= {episode.ref_nlt + FIVE} mm, or any increase of new non-target lesions"
        )
    parts.append("any additional new lesion, or PD in another category")
    earliest = episode.ref_date + timedelta(days=EARLIEST_CONFIRMATION_DAYS)
    return f"confirmed (iCPD) by {'; '.join(parts)}, on a scan from {earliest}"


def _reset_if(episode: Episode) -> str:
    """What would reset the bar after the open iUPD."""
    if NEW in episode.cats:
        return (
            "reset if the new lesions resolve, or the baseline targets shrink further to PR or CR by "
            "themselves"
        )
    return "reset if the findings that triggered the iUPD no longer meet PD"


def best_overall_response(
    cats: Sequence[Category], dates: Sequence[date], start: date, options: Options
) -> Category:
    """iBOR (Table 3) over the visits up to the first iCPD: iCR > iPR > iSD/iNN (>= min SD days) > iCPD >
    iUPD > NE."""
    if Category.ICR in cats:
        return Category.ICR
    if Category.IPR in cats:
        return Category.IPR
    for c, d in zip(cats, dates, strict=True):
        if c in (Category.ISD, Category.INN) and (d - start).days >= options.min_sd_days:
            return c
    if Category.ICPD in cats:
        return Category.ICPD
    if Category.IUPD in cats:
        return Category.IUPD
    return Category.NE


def assess(timeline: Timeline) -> CriterionResult:
    """iRECIST over a series (docs/criteria.md §3): every follow-up with its state and next step."""
    recist_result = recist.assess(timeline)
    registry = build_registry(timeline)
    tps = timeline.timepoints
    b = registry.baseline_index
    start = timeline.context.treatment_start or timeline.baseline.date
    episode: Episode | None = None
    known_new: set[str] = set()
    progressed_nlnt: set[str] = set()
    nlt_nadir: Decimal | None = None
    last_eval: Category | None = None
    closed_at: int | None = None
    out: list[TimepointAssessment | None] = [None] * (b + 1)
    for t in timeline.followups:
        rtp = recist_result.timepoints[t]
        assert rtp is not None
        tp = tps[t]
        if closed_at is not None:
            out.append(
                replace(
                    rtp,
                    category=Category.ICPD,
                    provisional_category=None,
                    rule="after iCPD: further visits are not assessed",
                    citation=CITATION,
                    post_pd=True,
                    backdated=False,
                    state=f"iCPD confirmed at {timeline.label(closed_at)}",
                    next_step=None,
                )
            )
            continue
        target, non_target = rtp.target, rtp.non_target
        values = tuple(recist.target_value(r) for r in registry.target_records[t])
        new_now = registry.unequivocal_new(t)
        new_ids = {les.id for les in new_now}
        additional = bool(new_ids - known_new)
        nlt_now = nlt_sum(new_now)
        nt_increased = any(r is not None and r.increased_since_prior for r in registry.non_target_records[t])
        nlnt_increased = any(
            les.increased_since_prior and les.new_category is not NewCategory.TARGET for les in new_now
        )
        # unequivocal progression of new non-target lesions (iRECIST FAQ): counts once per lesion
        progressing = {
            les.id
            for les in new_now
            if les.status is LesionStatus.UNEQUIVOCAL_PROGRESSION
            and les.new_category is not NewCategory.TARGET
        }
        nlnt_unequivocal = bool(progressing - progressed_nlnt)
        reappeared = last_eval is Category.ICR and rtp.reappearance_after_cr
        notes: list[str] = []
        state: str
        next_step: str | None = None
        if episode is None:
            trig: set[str] = set()
            if target is Category.PD or reappeared:
                trig.add(TARGET)
            if non_target is Category.PD:
                trig.add(NON_TARGET)
            if additional or nlnt_unequivocal:
                trig.add(NEW)
                if nlnt_unequivocal and not additional:
                    notes.append("new non-target lesions progressed unequivocally")
            elif nlt_nadir is not None and nlt_now > ZERO and pd_test(nlt_now, nlt_nadir):
                trig.add(NEW)
                notes.append(f"new-lesion target sum {nlt_now} mm meets PD vs its nadir {nlt_nadir} mm")
            if trig:
                episode = Episode(frozenset(trig), values, nlt_now, tp.date, t, timeline.label(t))
                category = Category.IUPD
                rule = f"iUPD (unconfirmed progression) from {', '.join(sorted(trig))}"
            else:
                category, rule = recist_like(target, non_target, bool(new_now))
        else:
            reason = confirms_progression(
                episode,
                target,
                non_target,
                values,
                nlt_now,
                nt_increased,
                nlnt_increased,
                nlnt_unequivocal,
                additional,
            )
            days = (tp.date - episode.ref_date).days
            if (
                reason
                and days < EARLIEST_CONFIRMATION_DAYS
                and not (additional and tp.unscheduled_for_symptoms)
            ):
                notes.append(f"{reason}, but only {days} days after the iUPD: too early to confirm")
                reason = None
            if reason:
                category, rule = Category.ICPD, f"iCPD: {reason}"
                closed_at = t
            elif target is Category.NE or (target is Category.NONE and non_target is Category.NE):
                category, rule = Category.NE, "not evaluable; the iUPD stays unconfirmed"
            else:
                # FAQ scenario B: only shrinkage that itself meets PR (or CR) against baseline, and is further
                # than at the iUPD, resets a new-lesion iUPD; PR persisting from before does not (scenario F)
                shrank = _meets_response_by_itself(rtp) and _shrank_since(episode, values)
                still = (
                    (TARGET in episode.cats and target is Category.PD)
                    or (NON_TARGET in episode.cats and non_target is Category.PD)
                    or (NEW in episode.cats and bool(new_now) and not shrank)
                )
                if still:
                    category, rule = Category.IUPD, "iUPD persists without confirmation"
                else:
                    category, rule = recist_like(target, non_target, bool(new_now))
                    rule = f"bar reset after iUPD; {rule}"
                    episode = None
        known_new |= new_ids
        progressed_nlnt |= progressing
        if nlt_now > ZERO or any(les.new_category is NewCategory.TARGET for les in new_now):
            nlt_nadir = nlt_now if nlt_nadir is None else min(nlt_nadir, nlt_now)
        if category is not Category.NE:
            last_eval = category
        if category is Category.ICPD:
            state = f"iCPD: progression confirmed at {timeline.label(t)}"
        elif episode is not None:
            since = f"{episode.label} ({episode.ref_date})"
            state = f"iUPD open since {since}, from {', '.join(sorted(episode.cats))}"
            next_step = f"{_confirm_if(episode)}; {_reset_if(episode)}"
        else:
            state = "no unconfirmed progression open"
        out.append(
            TimepointAssessment(
                index=t,
                date=tp.date,
                category=category,
                target=target,
                non_target=non_target,
                new_lesion=bool(new_now),
                sum_mm=rtp.sum_mm,
                partial_sum_mm=rtp.partial_sum_mm,
                baseline_sum_mm=rtp.baseline_sum_mm,
                nadir_sum_mm=rtp.nadir_sum_mm,
                change_vs_baseline_pct=rtp.change_vs_baseline_pct,
                change_vs_nadir_pct=rtp.change_vs_nadir_pct,
                ne_reason=rtp.ne_reason if category is Category.NE else None,
                rule=rule,
                citation=CITATION,
                missing_targets=rtp.missing_targets,
                notes=(*notes, f"new-lesion target sum {nlt_now} mm") if nlt_now else tuple(notes),
                reference=rtp.reference,
                reference_index=rtp.reference_index,
                reference_date=rtp.reference_date,
                reference_label=rtp.reference_label,
                state=state,
                next_step=next_step,
            )
        )
    window = [s for s in out[b + 1 :] if s is not None and not s.post_pd]
    bor = best_overall_response(
        [s.category for s in window], [s.date for s in window], start, timeline.options
    )
    return CriterionResult(
        criterion=Criterion.IRECIST,
        timepoints=tuple(out),
        bor=bor,
        bor_rule="iBOR per Seymour 2017 Table 3 (visits up to the first iCPD)",
        pd_date=tps[closed_at].date if closed_at is not None else None,
        pd_index=closed_at,
        baseline_sum_mm=recist_result.baseline_sum_mm,
        next_thresholds=recist_result.next_thresholds,
        notes=("iRECIST is a data-handling guideline, not validated for individual patient management.",),
    )


def _meets_response_by_itself(rtp: TimepointAssessment) -> bool:
    """The targets meet PR (or CR) against the baseline at this visit, not only by PR persistence."""
    if rtp.target is Category.CR:
        return True
    if rtp.sum_mm is None or rtp.baseline_sum_mm is None:
        return False
    return recist.pr_test(rtp.sum_mm, rtp.baseline_sum_mm)


def _shrank_since(episode: Episode, values: Sequence[Decimal | None]) -> bool:
    """The targets are smaller now than at the first iUPD, like for like."""
    ref, now, used, missing_now = like_for_like(episode.ref_values, values)
    return used > 0 and not missing_now and now < ref
