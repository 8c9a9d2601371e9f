"""iRECIST (Seymour 2017, Tables 2-3; EORTC iRECIST FAQ) as docs/criteria.md §3 states it.

The RECIST 1.1 target and non-target categories (same nadir, same PR persistence) drive a state machine:
an unconfirmed progression (iUPD) opens an episode that the next assessment confirms (iCPD), keeps open
(iUPD, NE) or closes by resetting the bar (iSD/iPR/iCR/iNN). New lesions give iUPD, never PD; new-lesion
targets (NLT) are summed separately from the baseline targets. Pure; never imports outside the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
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
    """An open (unconfirmed) iUPD: what triggered it and the reference measures at its first visit."""

    cats: frozenset[str]
    ref_sum: Decimal
    ref_nlt: Decimal
    ref_date: date
    index: int


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
    current_sum: Decimal,
    nlt_now: Decimal,
    nt_increased: bool,
    nlnt_increased: bool,
    additional_new: bool,
) -> str | None:
    """The reason the open iUPD is confirmed at this visit, or ``None`` (docs/criteria.md §3.3)."""
    if TARGET in episode.cats and current_sum - episode.ref_sum >= FIVE:
        return f"target sum +{current_sum - episode.ref_sum} mm (>= 5 mm) since the first iUPD"
    if NON_TARGET in episode.cats and nt_increased:
        return "further increase of non-target disease after a non-target iUPD"
    if NEW in episode.cats and nlt_now - episode.ref_nlt >= FIVE:
        return f"new-lesion target sum +{nlt_now - episode.ref_nlt} mm (>= 5 mm) since the first iUPD"
    if NEW in episode.cats and nlnt_increased:
        return "increase of new non-target lesions"
    if additional_new:
        return "additional new lesion(s)"
    if TARGET not in episode.cats and target is Category.PD:
        return "target PD in a category that was not part of the iUPD"
    if NON_TARGET not in episode.cats and non_target is Category.PD:
        return "non-target PD in a category that was not part of the iUPD"
    return None


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
    recist_result = recist.assess(timeline)
    registry = build_registry(timeline)
    tps = timeline.timepoints
    start = timeline.context.treatment_start or timeline.baseline.date
    episode: Episode | None = None
    known_new: set[str] = set()
    nlt_nadir: Decimal | None = None
    last_eval: Category | None = None
    closed_at: int | None = None
    out: list[TimepointAssessment | None] = [None]
    for t in range(1, len(tps)):
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
                )
            )
            continue
        target, non_target = rtp.target, rtp.non_target
        new_now = registry.unequivocal_new(t)
        new_ids = {les.id for les in new_now}
        additional = bool(new_ids - known_new)
        current = rtp.sum_mm if rtp.sum_mm is not None else (rtp.partial_sum_mm or ZERO)
        nlt_now = nlt_sum(new_now)
        nt_increased = any(r is not None and r.increased_since_prior for r in registry.non_target_records[t])
        nlnt_increased = any(
            les.increased_since_prior and les.new_category is not NewCategory.TARGET for les in new_now
        )
        reappeared = last_eval is Category.ICR and rtp.reappearance_after_cr
        notes: list[str] = []
        if episode is None:
            trig: set[str] = set()
            if target is Category.PD or reappeared:
                trig.add(TARGET)
            if non_target is Category.PD:
                trig.add(NON_TARGET)
            if additional:
                trig.add(NEW)
            elif nlt_nadir is not None and nlt_now > ZERO and pd_test(nlt_now, nlt_nadir):
                trig.add(NEW)
                notes.append(f"new-lesion target sum {nlt_now} mm meets PD vs its nadir {nlt_nadir} mm")
            if trig:
                episode = Episode(frozenset(trig), current, nlt_now, tp.date, t)
                category = Category.IUPD
                rule = f"iUPD (unconfirmed progression) from {', '.join(sorted(trig))}"
            else:
                category, rule = recist_like(target, non_target, bool(new_now))
        else:
            reason = confirms_progression(
                episode, target, non_target, current, nlt_now, nt_increased, nlnt_increased, additional
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
                still = (
                    (TARGET in episode.cats and target is Category.PD)
                    or (NON_TARGET in episode.cats and non_target is Category.PD)
                    or (
                        NEW in episode.cats
                        and bool(new_now)
                        and not (current < episode.ref_sum and target in (Category.PR, Category.CR))
                    )
                )
                if still:
                    category, rule = Category.IUPD, "iUPD persists without confirmation"
                else:
                    category, rule = recist_like(target, non_target, bool(new_now))
                    rule = f"bar reset after iUPD; {rule}"
                    episode = None
        known_new |= new_ids
        if nlt_now > ZERO or any(les.new_category is NewCategory.TARGET for les in new_now):
            nlt_nadir = nlt_now if nlt_nadir is None else min(nlt_nadir, nlt_now)
        if category is not Category.NE:
            last_eval = category
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
            )
        )
    window = [s for s in out[1:] if s is not None and not s.post_pd]
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
