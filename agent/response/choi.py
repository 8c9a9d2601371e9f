"""Choi criteria (GIST on imatinib; Choi 2007) and modified Choi (Nathan 2010): size and CT density.

Size is the RECIST 1.1 sum of the declared targets; density is the unweighted mean of the targets' mean HU on
contrast-enhanced CT in ``options.choi_density_phase`` at baseline and follow-up (docs/criteria.md §4). Choi
PR needs a >= 10 % size *or* >= 15 % density decrease; modified Choi needs *both*. PD is a >= 10 % size
increase vs the nadir (or the baseline, option) without a density PR, a new lesion or a new/enlarging
intratumoral nodule. CT only. Exact ``Decimal`` arithmetic, thresholds inclusive, ratios compared by
cross-multiplying. Never imports anything but the standard library and ``agent.response``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from agent.response import recist
from agent.response.model import (
    Category,
    ChoiPdReference,
    Criterion,
    CriterionResult,
    IntratumoralNodule,
    Lesion,
    LesionDetail,
    LesionKind,
    LesionStatus,
    Phase,
    Threshold,
    Timeline,
    TimePoint,
    TimepointAssessment,
)
from agent.response.registry import build_registry

CITATION_CHOI = (
    "Choi H et al. J Clin Oncol 2007;25:1753-1759; Benjamin RS et al. J Clin Oncol 2007;25:1760-1764"
)
CITATION_MCHOI = (
    "Nathan PD et al. Cancer Biol Ther 2010;9:15-19 (modified Choi); Choi H et al. J Clin Oncol 2007"
)

_HUNDRED = Decimal(100)


# ------------------------------------------------------------------------------------------------------
# Threshold rules (cross-multiplied, inclusive)


def choi_size_pr(size: Decimal, baseline_size: Decimal) -> bool:
    """Size PR: a decrease of at least 10 % vs baseline (``10·S <= 9·S0``)."""
    return 10 * size <= 9 * baseline_size


def choi_density_pr(density: Decimal, baseline_density: Decimal) -> bool:
    """Density PR: a decrease of at least 15 % vs baseline (``20·D <= 17·D0``).

    Works on the HU sums as well as on the means, since the same targets are paired at both time points.
    """
    return 20 * density <= 17 * baseline_density


def choi_size_pd(size: Decimal, reference: Decimal) -> bool:
    """Size PD: an increase of at least 10 % vs the reference (``10·S >= 11·ref``); no absolute 5 mm rule.

    Against a zero reference any positive size is an infinite increase (as in RECIST, docs/criteria.md §1.4).
    """
    if reference == 0:
        return size > 0
    return 10 * size >= 11 * reference


def percent_change(value: Decimal, reference: Decimal) -> Decimal | None:
    """Exact percent change of ``value`` vs ``reference``; ``None`` against a zero reference."""
    if reference == 0:
        return None
    return (value - reference) * _HUNDRED / reference


# ------------------------------------------------------------------------------------------------------
# Inputs: CT, size and paired density


def is_ct(timepoint: TimePoint) -> bool:
    """Choi is validated on CT only (docs/criteria.md §4.2)."""
    modality = timepoint.modality
    return modality == "CT" or (modality or "").strip().upper() == "CT"


def is_contrast_enhanced(timepoint: TimePoint, phase: Phase | None) -> bool:
    """Contrast-enhanced: not declared unenhanced, and not acquired in the unenhanced phase."""
    return timepoint.contrast is not False and phase is not None and phase is not Phase.UNENHANCED


@dataclass(frozen=True, slots=True)
class PairedDensity:
    """Mean HU over the baseline targets at baseline and now, or why it cannot be compared."""

    evaluable: bool
    baseline_sum_hu: Decimal | None = None
    sum_hu: Decimal | None = None
    count: int = 0
    reason: str | None = None
    lesions: tuple[LesionDetail, ...] = ()  # every target's HU at baseline and now, and whether it was used
    # Targets compared although their contrast phase was unknown (assumed, see ``assumption``).
    assumed: tuple[str, ...] = ()
    assumed_phase: Phase | None = None

    @property
    def assumption(self) -> str | None:
        """The assumption the comparison rests on, in words; None when none was made."""
        if not self.assumed:
            return None
        assumed = (
            f"{self.assumed_phase.value} phase"
            if self.assumed_phase is not None
            else "the same phase at both time points"
        )
        return (
            f"contrast phase unknown for {', '.join(self.assumed)}: assumed {assumed} on contrast-enhanced CT"
        )

    @property
    def note(self) -> str | None:
        """Which targets the mean density is over, when some were left out."""
        left = [d for d in self.lesions if not d.used]
        if not self.evaluable or not left:
            return None
        used = ", ".join(d.lesion_id for d in self.lesions if d.used)
        out = "; ".join(f"{d.lesion_id} ({d.result})" for d in left)
        return f"density over the targets measured at both visits: {used}; left out: {out}"

    @property
    def baseline_mean_hu(self) -> Decimal | None:
        return None if self.baseline_sum_hu is None or not self.count else self.baseline_sum_hu / self.count

    @property
    def mean_hu(self) -> Decimal | None:
        return None if self.sum_hu is None or not self.count else self.sum_hu / self.count


def paired_density(
    baseline: TimePoint,
    current: TimePoint,
    baseline_records: Sequence[Lesion | None],
    current_records: Sequence[Lesion | None],
    phase: Phase | None,
    assume_unknown: bool = False,
) -> PairedDensity:
    """Pair the targets' mean HU at baseline and now (docs/criteria.md §4.2), target by target.

    The density is the unweighted mean of the per-lesion means [P] over the targets measured at both visits:
    with ``mean_hu`` at both, in ``phase`` at both (``phase=None``: any phase, but the same for a lesion at
    both time points, the "comparable CT" of the ancillary alerts). A target that disappeared or lacks a
    value is left out and named. Evaluable on contrast-enhanced CT at both time points, with at least one
    target used and a positive baseline mean. With ``assume_unknown``, a target whose phase is unknown at a
    time point declared contrast-enhanced is compared as if in the wanted phase (``phase``, or the other
    time point's known phase); the targets are listed in ``assumed``. A known mismatch never is.
    """
    if not baseline_records:
        return PairedDensity(False, reason="no target lesion")
    if not is_ct(baseline) or not is_ct(current):
        return PairedDensity(False, reason="density (HU) needs CT at both time points")
    if baseline.contrast is False or current.contrast is False:
        return PairedDensity(False, reason="density needs contrast-enhanced CT at both time points")
    baseline_sum = Decimal(0)
    current_sum = Decimal(0)
    details: list[LesionDetail] = []
    assumed: list[str] = []
    assumed_phase: Phase | None = None
    enhanced = baseline.contrast is True and current.contrast is True
    for b, c in zip(baseline_records, current_records, strict=True):
        if b is None:
            continue
        b_hu = b.mean_hu
        c_hu = c.mean_hu if c is not None else None
        why: str | None = None
        if c is not None and c.status in (LesionStatus.DISAPPEARED, LesionStatus.COALESCED):
            why = f"{c.status.value}"
        elif b_hu is None or c_hu is None:
            why = "no mean HU at both visits"
        else:
            b_phase = b.phase if b.phase is not None else baseline.phase
            c_phase = c.phase if c is not None and c.phase is not None else current.phase
            wanted = phase if phase is not None else b_phase or c_phase
            assume = (
                assume_unknown
                and enhanced
                and (b_phase is None or c_phase is None)
                and wanted is not Phase.UNENHANCED
            )
            if assume:
                assumed.append(b.id)
                assumed_phase = wanted
                b_phase, c_phase = b_phase or wanted, c_phase or wanted
            if assume and wanted is None:
                pass  # any phase, the same at both: both unknown, assumed the same
            elif (
                b_phase is not wanted or c_phase is not wanted or wanted is None or wanted is Phase.UNENHANCED
            ):
                why = (
                    f"phase {_phase_name(b_phase)} -> {_phase_name(c_phase)}, needs "
                    f"{_phase_name(wanted)} contrast phase at both visits"
                )
        details.append(LesionDetail(b.id, "mean_hu", b_hu, c_hu, why, why is None))
        if why is None and b_hu is not None and c_hu is not None:
            baseline_sum += b_hu
            current_sum += c_hu
    used = sum(1 for d in details if d.used)
    if not used:
        reasons = "; ".join(f"target {d.lesion_id}: {d.result}" for d in details)
        return PairedDensity(False, reason=reasons or "no target measured", lesions=tuple(details))
    if baseline_sum <= 0:
        return PairedDensity(False, reason="baseline density is not above 0 HU", lesions=tuple(details))
    return PairedDensity(
        True,
        baseline_sum,
        current_sum,
        used,
        lesions=tuple(details),
        assumed=tuple(a for a in assumed if any(d.lesion_id == a and d.used for d in details)),
        assumed_phase=assumed_phase,
    )


def _phase_name(phase: Phase | None) -> str:
    return phase.value if phase is not None else "unknown"


def has_intratumoral_nodule(lesions: tuple[Lesion, ...]) -> bool:
    """A new or enlarging intratumoral nodule ("nodule within a mass") in a known tumour is Choi PD [V]."""
    with_nodule = [lesion for lesion in lesions if lesion.intratumoral_nodule is not IntratumoralNodule.NONE]
    return any(lesion.kind is not LesionKind.NEW for lesion in with_nodule)


# ------------------------------------------------------------------------------------------------------
# Response


def choi_target_response(
    size: Decimal,
    baseline_size: Decimal,
    reference: Decimal,
    density: PairedDensity,
    modified: bool,
) -> tuple[Category, str, str | None]:
    """Size/density part of Choi (all targets assessed, not CR): ``(category, rule, NE reason)``.

    Choi 2007 Table 3: PD is a >= 10 % size increase over ``reference`` that "does not meet criteria of PR by
    tumour density", so only a density PR exempts it, and PD is tested before PR by size (a size still 10 %
    below baseline does not excuse regrowth of 10 % over the nadir). PR: size or density (Choi); size and
    density (mChoi). When density is not evaluable a density PR cannot be ruled out, so SD or PD is NE.
    """
    size_pr = choi_size_pr(size, baseline_size)
    density_pr = (
        density.evaluable
        and density.sum_hu is not None
        and density.baseline_sum_hu is not None
        and choi_density_pr(density.sum_hu, density.baseline_sum_hu)
    )
    size_pd = choi_size_pd(size, reference)
    by_size = f"size {size} mm, {_pct_text(size, baseline_size)} vs baseline {baseline_size} mm"
    growth = f"{_pct_text(size, reference)} vs the reference {reference} mm"
    by_density = (
        f"density {_pct_text(density.sum_hu, density.baseline_sum_hu)} vs baseline"
        if density.evaluable
        else "density not evaluable"
    )
    if modified:
        if size_pr and density_pr and not size_pd:
            return Category.PR, f"mchoi_pr_size_and_density: {by_size} (<= -10 %) and {by_density}", None
    else:
        if density_pr:
            return Category.PR, f"choi_pr_density: {by_density} (<= -15 %)", None
        if size_pr and not size_pd:
            return Category.PR, f"choi_pr_size: {by_size} (<= -10 %), not +10 % over the reference", None
    if not density.evaluable:
        label = "mchoi" if modified else "choi"
        return Category.NE, f"{label}_density_not_evaluable", f"density not evaluable: {density.reason}"
    if size_pd and not density_pr:
        return Category.PD, f"choi_pd_size: {growth} (>= +10 %) and no PR by density ({by_density})", None
    return Category.SD, f"choi_sd: {by_size}, {growth}, {by_density}: neither PR nor PD", None


def _pct_text(value: Decimal | None, reference: Decimal | None) -> str:
    change = None if value is None or reference is None else percent_change(value, reference)
    return "n/a" if change is None else f"{change.quantize(Decimal('0.1')):+f} %"


@dataclass(frozen=True, slots=True)
class ChoiInputs:
    """Everything Choi and mChoi read from a timeline, per time point (computed once, shared by both).

    ``sums`` is the RECIST 1.1 target sum (``None`` when a target is not assessed); ``nadirs[t]`` the
    smallest complete sum before ``t`` (baseline included); ``density[t]`` the paired density vs baseline
    in ``options.choi_density_phase`` (``None`` at the baseline). The remaining columns are the parts of the
    Choi and mChoi results that do not depend on the criterion: the size the PD test compares with
    (``options.choi_pd_reference``), the percent changes, the mean densities and whether both scans are CT.
    """

    target_ids: tuple[str, ...]
    sums: tuple[Decimal | None, ...]
    partial_sums: tuple[Decimal, ...]
    nadirs: tuple[Decimal | None, ...]
    all_disappeared: tuple[bool, ...]
    missing: tuple[tuple[str, ...], ...]
    density: tuple[PairedDensity | None, ...]
    non_target: tuple[Category, ...]
    new_lesion: tuple[bool, ...]
    nodule: tuple[bool, ...]
    references: tuple[Decimal | None, ...] = ()
    change_vs_baseline_pct: tuple[Decimal | None, ...] = ()
    change_vs_reference_pct: tuple[Decimal | None, ...] = ()
    density_hu: tuple[Decimal | None, ...] = ()
    density_baseline_hu: tuple[Decimal | None, ...] = ()
    change_density_pct: tuple[Decimal | None, ...] = ()
    density_notes: tuple[tuple[str, ...], ...] = ()
    ct: tuple[bool, ...] = ()
    baseline_density_hu: Decimal | None = None  # for the thresholds of the next read
    baseline_index: int = 0
    reference_index: tuple[int | None, ...] = ()  # the time point whose size ``references[t]`` is
    excluded: tuple[str | None, ...] = ()  # why a time point is not assessed (evidence checks)
    baseline_unknown: str | None = None  # why the baseline size is unknown

    @property
    def baseline_size(self) -> Decimal | None:
        return self.sums[self.baseline_index]


def choi_inputs(timeline: Timeline) -> ChoiInputs:
    """Choi size = the RECIST 1.1 target sum (docs/criteria.md §4.1), so the sums, the non-target category,
    the new lesions and the target CR test are read from the RECIST 1.1 result; density as
    ``paired_density``. Columns are aligned with the time points; history and baseline hold placeholders."""
    registry = build_registry(timeline)
    rec = recist.assess(timeline)
    targets = registry.targets
    tps = timeline.timepoints
    b = registry.baseline_index
    phase = timeline.options.choi_density_phase
    assume = timeline.options.choi_assume_unknown_phase
    by_baseline = timeline.options.choi_pd_reference is ChoiPdReference.BASELINE
    baseline_ct = is_ct(tps[b])
    baseline_sum = rec.baseline_sum_mm if targets else None
    n = b + 1
    none: list[Decimal | None] = [None] * b
    sums: list[Decimal | None] = [*none, baseline_sum]
    partials: list[Decimal] = [Decimal(0)] * b + [baseline_sum if baseline_sum is not None else Decimal(0)]
    nadirs: list[Decimal | None] = [None] * n
    gone = [False] * n
    missing: list[tuple[str, ...]] = [()] * n
    density: list[PairedDensity | None] = [None] * n
    non_target = [Category.NONE] * n
    new_lesion = [False] * n
    nodule = [False] * n
    references: list[Decimal | None] = [*none, baseline_sum if by_baseline else None]
    reference_index: list[int | None] = [None] * n
    vs_baseline: list[Decimal | None] = [None] * n
    vs_reference: list[Decimal | None] = [None] * n
    density_hu: list[Decimal | None] = [None] * n
    density_baseline_hu: list[Decimal | None] = [None] * n
    density_change: list[Decimal | None] = [None] * n
    density_notes: list[tuple[str, ...]] = [()] * n
    ct = [False] * b + [baseline_ct]
    excluded: list[str | None] = [None] * n
    low, low_index = baseline_sum, b
    for t in timeline.followups:
        step = rec.timepoints[t]
        assert step is not None
        excluded.append(registry.exclusion(t))
        total = step.sum_mm
        sums.append(total)
        partials.append(step.partial_sum_mm if step.partial_sum_mm is not None else total or Decimal(0))
        nadirs.append(low)
        reference = baseline_sum if by_baseline else low
        references.append(reference)
        reference_index.append(b if by_baseline else low_index)
        vs_baseline.append(_pct(total, baseline_sum))
        vs_reference.append(_pct(total, reference))
        if total is not None and low is not None and total < low:
            low, low_index = total, t
        gone.append(step.target is Category.CR)
        missing.append(step.missing_targets)
        paired = paired_density(tps[b], tps[t], targets, registry.target_records[t], phase, assume)
        density.append(paired)
        density_hu.append(paired.mean_hu)
        density_baseline_hu.append(paired.baseline_mean_hu)
        density_change.append(_pct(paired.sum_hu, paired.baseline_sum_hu))
        if paired.evaluable:
            notes = [n for n in (paired.note, paired.assumption) if n is not None]
            if paired.assumption is not None:
                notes[-1] = f"warning: {paired.assumption}"
            density_notes.append(tuple(notes))
        else:
            density_notes.append((f"density not evaluable: {paired.reason}",))
        non_target.append(step.non_target)
        new_lesion.append(step.new_lesion)
        nodule.append(excluded[-1] is None and has_intratumoral_nodule(tps[t].lesions))
        ct.append(baseline_ct and is_ct(tps[t]))
    target_ids = tuple(les.id for les in targets)
    return ChoiInputs(
        target_ids=target_ids,
        sums=tuple(sums),
        partial_sums=tuple(partials),
        nadirs=tuple(nadirs),
        all_disappeared=tuple(gone),
        missing=tuple(missing),
        density=tuple(density),
        non_target=tuple(non_target),
        new_lesion=tuple(new_lesion),
        nodule=tuple(nodule),
        references=tuple(references),
        change_vs_baseline_pct=tuple(vs_baseline),
        change_vs_reference_pct=tuple(vs_reference),
        density_hu=tuple(density_hu),
        density_baseline_hu=tuple(density_baseline_hu),
        change_density_pct=tuple(density_change),
        density_notes=tuple(density_notes),
        ct=tuple(ct),
        baseline_density_hu=baseline_density(timeline, target_ids),
        baseline_index=b,
        reference_index=tuple(reference_index),
        excluded=tuple(excluded),
        baseline_unknown=registry.baseline_sum_unknown() if targets else None,
    )


def size_reference(inputs: ChoiInputs, index: int, pd_reference: ChoiPdReference) -> Decimal | None:
    """The size the Choi PD test compares with: the nadir before ``index`` (default) or the baseline [P]."""
    if pd_reference is ChoiPdReference.BASELINE:
        return inputs.baseline_size
    if index < len(inputs.nadirs):
        return inputs.nadirs[index]
    complete = [s for s in inputs.sums[inputs.baseline_index :] if s is not None]
    return min(complete) if complete and inputs.baseline_size is not None else None


def _choi_assessment(
    timeline: Timeline,
    series: ChoiInputs,
    index: int,
    modified: bool,
    category: Category,
    target: Category,
    rule: str,
    ne_reason: str | None = None,
) -> TimepointAssessment:
    """The Choi (or mChoi) result at ``index``: the category and rule, plus the shared sizes and densities."""
    current = timeline.timepoints[index]
    size = series.sums[index]
    density = series.density[index]
    compared = series.references[index] is not None and series.excluded[index] is None
    ref_index = series.reference_index[index] if compared else None
    by_baseline = timeline.options.choi_pd_reference is ChoiPdReference.BASELINE
    reference = ("baseline" if by_baseline else "nadir") if compared else None
    return TimepointAssessment(
        index=index,
        date=current.date,
        category=category,
        target=target,
        non_target=series.non_target[index],
        new_lesion=series.new_lesion[index],
        sum_mm=size,
        partial_sum_mm=series.partial_sums[index] if size is None else None,
        baseline_sum_mm=series.baseline_size,
        nadir_sum_mm=series.references[index],
        change_vs_baseline_pct=series.change_vs_baseline_pct[index],
        change_vs_nadir_pct=series.change_vs_reference_pct[index],
        ne_reason=ne_reason,
        rule=rule,
        citation=CITATION_MCHOI if modified else CITATION_CHOI,
        density_hu=series.density_hu[index],
        density_baseline_hu=series.density_baseline_hu[index],
        change_density_pct=series.change_density_pct[index],
        notes=series.density_notes[index],
        reference=reference,
        reference_index=ref_index,
        reference_date=timeline.timepoints[ref_index].date if ref_index is not None else None,
        reference_label=timeline.label(ref_index) if ref_index is not None else None,
        lesions=density.lesions if density is not None else (),
    )


def choi_timepoint(timeline: Timeline, series: ChoiInputs, index: int, modified: bool) -> TimepointAssessment:
    """Choi (or modified Choi) response at follow-up ``index`` (docs/criteria.md §4.3)."""
    current = timeline.timepoints[index]
    baseline_size, size = series.baseline_size, series.sums[index]
    reference = series.references[index]
    density = series.density[index]
    assert density is not None
    non_target = series.non_target[index]

    if not series.ct[index]:
        baseline = timeline.baseline
        reason = f"Choi is CT-only (baseline {baseline.modality}, follow-up {current.modality})"
        return _choi_assessment(
            timeline, series, index, modified, Category.NE, Category.NE, "choi_ct_only", reason
        )
    excluded = series.excluded[index]
    if excluded is not None:
        return _choi_assessment(
            timeline, series, index, modified, Category.NE, Category.NE, "choi_not_assessed", excluded
        )
    target_reason: str | None = None
    if series.target_ids and series.baseline_unknown is not None:
        target, target_rule = Category.NE, "choi_baseline_size_unknown"
        target_reason = f"the baseline size is unknown: {series.baseline_unknown}"
    elif not series.target_ids or baseline_size is None:
        target, target_rule, target_reason = (
            Category.NONE,
            "choi_no_targets",
            "no measured target at baseline",
        )
    elif series.nodule[index]:
        target, target_rule = Category.PD, "choi_pd_intratumoral_nodule"
    elif size is None or reference is None:
        missing = ", ".join(series.missing[index])
        target, target_rule, target_reason = (
            Category.NE,
            "choi_target_not_assessed",
            f"target not assessed: {missing}",
        )
    elif series.all_disappeared[index]:
        target, target_rule = Category.CR, "choi_cr_targets_disappeared"
    else:
        target, target_rule, target_reason = choi_target_response(
            size, baseline_size, reference, density, modified
        )
    if series.new_lesion[index]:
        return _choi_assessment(timeline, series, index, modified, Category.PD, target, "choi_pd_new_lesion")
    if target is Category.PD:
        return _choi_assessment(timeline, series, index, modified, Category.PD, target, target_rule)
    if non_target is Category.PD:
        # Not in Choi's PD row, but PR requires no obvious progression of non-measurable disease [P].
        return _choi_assessment(timeline, series, index, modified, Category.PD, target, "choi_pd_non_target")
    if target is Category.NE or target is Category.NONE:
        return _choi_assessment(
            timeline, series, index, modified, Category.NE, target, target_rule, target_reason
        )
    if target is Category.CR and non_target is not Category.CR and non_target is not Category.NONE:
        # Targets gone but non-targets persist: a size decrease of 100 %, so PR (as RECIST Table 1).
        rule = "choi_pr_size_targets_gone_non_target_present"
        return _choi_assessment(timeline, series, index, modified, Category.PR, target, rule)
    return _choi_assessment(timeline, series, index, modified, target, target, target_rule, target_reason)


def _pct(value: Decimal | None, reference: Decimal | None) -> Decimal | None:
    if value is None or reference is None:
        return None
    return percent_change(value, reference)


def best_response(
    followups: tuple[TimepointAssessment, ...], treatment_start: date | None, min_sd_days: int
) -> tuple[Category, int | None]:
    """Best response without confirmation, up to the first PD: CR > PR > SD (>= ``min_sd_days``) > PD > NE.

    Neither Choi nor Nathan define a BOR; we reuse the RECIST 1.1 rule for trials without confirmation [P].
    Returns the category and the index of the first PD.
    """
    seen: list[TimepointAssessment] = []
    pd_index: int | None = None
    for tp in followups:
        seen.append(tp)
        if tp.category is Category.PD:
            pd_index = tp.index
            break
    categories = {tp.category for tp in seen}
    if Category.CR in categories:
        return Category.CR, pd_index
    if Category.PR in categories:
        return Category.PR, pd_index
    if any(
        tp.category is Category.SD and _days_on_treatment(tp.date, treatment_start) >= min_sd_days
        for tp in seen
    ):
        return Category.SD, pd_index
    if pd_index is not None:
        return Category.PD, pd_index
    return Category.NE, pd_index


def _days_on_treatment(when: date, treatment_start: date | None) -> int:
    return (when - treatment_start).days if treatment_start is not None else 0


def next_thresholds(timeline: Timeline, series: ChoiInputs, modified: bool) -> tuple[Threshold, ...]:
    """Size and density values at which the next read would change category (docs/criteria.md §1.7).

    PR by size at ``<= 0.9 × baseline`` sum, PR by density at ``<= 0.85 × baseline`` mean HU (mChoi: both),
    PD by size at ``>= 1.1 ×`` the reference (nadir including the latest evaluable read, or baseline).
    """
    baseline_size = series.baseline_size
    if baseline_size is None or not series.target_ids:
        return ()
    label = "mChoi" if modified else "Choi"
    joint = " (together with the density threshold)" if modified else ""
    thresholds = [
        Threshold(
            Category.PR,
            "<=",
            baseline_size * 9 / 10,
            "target_sum_mm",
            f"{label} PR: size sum at least 10 % below baseline {baseline_size} mm{joint}",
        )
    ]
    density = series.baseline_density_hu
    if density is not None:
        thresholds.append(
            Threshold(
                Category.PR,
                "<=",
                density * 17 / 20,
                "density_hu",
                f"{label} PR: mean target density at least 15 % below baseline {density} HU"
                f" ({timeline.options.choi_density_phase.value} CT){joint}",
            )
        )
    reference = size_reference(series, len(series.sums), timeline.options.choi_pd_reference)
    if reference is not None:
        which = "baseline" if timeline.options.choi_pd_reference is ChoiPdReference.BASELINE else "nadir"
        if reference == 0:
            thresholds.append(
                Threshold(
                    Category.PD, ">", reference, "target_sum_mm", f"{label} PD: any size above a {which} of 0"
                )
            )
        else:
            thresholds.append(
                Threshold(
                    Category.PD,
                    ">=",
                    reference * 11 / 10,
                    "target_sum_mm",
                    f"{label} PD: size sum at least 10 % above the {which} {reference} mm, no density PR",
                )
            )
    return tuple(thresholds)


def baseline_density(timeline: Timeline, target_ids: tuple[str, ...]) -> Decimal | None:
    """Baseline mean HU of the targets if every target has one in the density phase on enhanced CT."""
    baseline = timeline.baseline
    if not target_ids or not is_ct(baseline):
        return None
    by_id = {lesion.id: lesion for lesion in baseline.lesions}
    values: list[Decimal] = []
    for lesion_id in target_ids:
        lesion = by_id.get(lesion_id)
        if lesion is None or lesion.mean_hu is None:
            return None
        phase = baseline.lesion_phase(lesion)
        if phase is not timeline.options.choi_density_phase or not is_contrast_enhanced(baseline, phase):
            return None
        values.append(lesion.mean_hu)
    mean = sum(values, Decimal(0)) / len(values)
    return mean if mean > 0 else None


def _assess(timeline: Timeline, modified: bool) -> CriterionResult:
    series = choi_inputs(timeline)
    followups = tuple(choi_timepoint(timeline, series, index, modified) for index in timeline.followups)
    bor, pd_index = best_response(followups, timeline.context.treatment_start, timeline.options.min_sd_days)
    return CriterionResult(
        criterion=Criterion.MCHOI if modified else Criterion.CHOI,
        timepoints=(*([None] * (series.baseline_index + 1)), *followups),
        bor=bor,
        bor_rule="best response up to the first PD; SD counts from min_sd_days after treatment start [P]",
        pd_date=timeline.timepoints[pd_index].date if pd_index is not None else None,
        pd_index=pd_index,
        baseline_sum_mm=series.baseline_size,
        next_thresholds=next_thresholds(timeline, series, modified),
    )


def assess_choi(timeline: Timeline) -> CriterionResult:
    """Choi response at every follow-up time point (docs/criteria.md §4.1-§4.3)."""
    return _assess(timeline, modified=False)


def assess_mchoi(timeline: Timeline) -> CriterionResult:
    """Modified Choi (Nathan 2010): PR needs both the size and the density decrease (criteria §4.4)."""
    return _assess(timeline, modified=True)
