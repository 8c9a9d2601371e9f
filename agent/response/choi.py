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
    LesionKind,
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

    Evaluable only on contrast-enhanced CT at both time points, with every target's ROI in ``phase`` at both
    (``phase=None``: any phase, but the same for a lesion at both time points, the "comparable CT" of the
    ancillary alerts), every target having ``mean_hu`` at both, and a positive baseline density. The density
    is the unweighted mean of the per-lesion means [P]. With ``assume_unknown``, a target whose phase is
    unknown at a time point declared contrast-enhanced is compared as if in the wanted phase (``phase``, or
    the other time point's known phase); the targets are listed in ``assumed``. A known mismatch never is.
    """
    if not baseline_records:
        return PairedDensity(False, reason="no target lesion")
    if not is_ct(baseline) or not is_ct(current):
        return PairedDensity(False, reason="density (HU) needs CT at both time points")
    if baseline.contrast is False or current.contrast is False:
        return PairedDensity(False, reason="density needs contrast-enhanced CT at both time points")
    baseline_sum = Decimal(0)
    current_sum = Decimal(0)
    assumed: list[str] = []
    assumed_phase: Phase | None = None
    for b, c in zip(baseline_records, current_records, strict=True):
        if b is None or c is None or b.mean_hu is None or c.mean_hu is None:
            lesion_id = b.id if b is not None else "?"
            return PairedDensity(False, reason=f"target {lesion_id} has no mean HU at both time points")
        b_phase = b.phase if b.phase is not None else baseline.phase
        c_phase = c.phase if c.phase is not None else current.phase
        wanted = phase if phase is not None else b_phase or c_phase
        enhanced = baseline.contrast is True and current.contrast is True
        if (
            assume_unknown
            and enhanced
            and (b_phase is None or c_phase is None)
            and wanted is not Phase.UNENHANCED
        ):
            assumed.append(b.id)
            assumed_phase = wanted
            if wanted is None:  # any phase, the same at both: both unknown, assumed the same
                baseline_sum += b.mean_hu
                current_sum += c.mean_hu
                continue
            b_phase, c_phase = b_phase or wanted, c_phase or wanted
        if b_phase is not wanted or c_phase is not wanted or wanted is None or wanted is Phase.UNENHANCED:
            return PairedDensity(
                False,
                reason=(
                    f"target {b.id} density phase {_phase_name(b_phase)} -> {_phase_name(c_phase)}, "
                    f"needs {_phase_name(wanted)} contrast phase at both time points"
                ),
            )
        baseline_sum += b.mean_hu
        current_sum += c.mean_hu
    if baseline_sum <= 0:
        return PairedDensity(False, reason="baseline density is not above 0 HU")
    return PairedDensity(
        True,
        baseline_sum,
        current_sum,
        len(baseline_records),
        assumed=tuple(assumed),
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

    Choi: PR by size or by density; mChoi: PR needs both. PD needs a >= 10 % size increase vs ``reference``
    and no PR by density; SD or PD cannot be told apart from a density PR when density is not evaluable,
    so those are NE (docs/criteria.md §4.3).
    """
    size_pr = choi_size_pr(size, baseline_size)
    density_pr = (
        density.evaluable
        and density.sum_hu is not None
        and density.baseline_sum_hu is not None
        and choi_density_pr(density.sum_hu, density.baseline_sum_hu)
    )
    if modified:
        if size_pr and density_pr:
            return Category.PR, "mchoi_pr_size_and_density", None
        if not density.evaluable:
            return Category.NE, "mchoi_density_not_evaluable", f"density not evaluable: {density.reason}"
    else:
        if size_pr:
            return Category.PR, "choi_pr_size", None
        if density_pr:
            return Category.PR, "choi_pr_density", None
        if not density.evaluable:
            return Category.NE, "choi_density_not_evaluable", f"density not evaluable: {density.reason}"
    if choi_size_pd(size, reference) and not density_pr:
        return Category.PD, "choi_pd_size", None
    return Category.SD, "choi_sd", None


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


def choi_inputs(timeline: Timeline) -> ChoiInputs:
    """Choi size = the RECIST 1.1 target sum (docs/criteria.md §4.1), so the sums, the non-target category,
    the new lesions and the target CR test are read from the RECIST 1.1 result; density as
    ``paired_density``."""
    registry = build_registry(timeline)
    rec = recist.assess(timeline)
    targets = registry.targets
    tps = timeline.timepoints
    phase = timeline.options.choi_density_phase
    assume = timeline.options.choi_assume_unknown_phase
    by_baseline = timeline.options.choi_pd_reference is ChoiPdReference.BASELINE
    baseline_ct = is_ct(tps[0])
    baseline_sum = rec.baseline_sum_mm if targets else None
    sums: list[Decimal | None] = [baseline_sum]
    partials: list[Decimal] = [baseline_sum if baseline_sum is not None else Decimal(0)]
    nadirs: list[Decimal | None] = [None]
    gone = [False]
    missing: list[tuple[str, ...]] = [()]
    density: list[PairedDensity | None] = [None]
    non_target = [Category.NONE]
    new_lesion = [False]
    nodule = [False]
    references: list[Decimal | None] = [baseline_sum if by_baseline else None]
    vs_baseline: list[Decimal | None] = [None]
    vs_reference: list[Decimal | None] = [None]
    density_hu: list[Decimal | None] = [None]
    density_baseline_hu: list[Decimal | None] = [None]
    density_change: list[Decimal | None] = [None]
    density_notes: list[tuple[str, ...]] = [()]
    ct = [baseline_ct]
    low = baseline_sum
    for t in range(1, len(tps)):
        step = rec.timepoints[t]
        assert step is not None
        total = step.sum_mm
        sums.append(total)
        partials.append(step.partial_sum_mm if step.partial_sum_mm is not None else total or Decimal(0))
        nadirs.append(low)
        reference = baseline_sum if by_baseline else low
        references.append(reference)
        vs_baseline.append(_pct(total, baseline_sum))
        vs_reference.append(_pct(total, reference))
        if total is not None and low is not None and total < low:
            low = total
        gone.append(step.target is Category.CR)
        missing.append(step.missing_targets)
        paired = paired_density(tps[0], tps[t], targets, registry.target_records[t], phase, assume)
        density.append(paired)
        density_hu.append(paired.mean_hu)
        density_baseline_hu.append(paired.baseline_mean_hu)
        density_change.append(_pct(paired.sum_hu, paired.baseline_sum_hu))
        if not paired.evaluable:
            density_notes.append((f"density not evaluable: {paired.reason}",))
        else:
            density_notes.append((f"warning: {paired.assumption}",) if paired.assumption else ())
        non_target.append(step.non_target)
        new_lesion.append(step.new_lesion)
        nodule.append(has_intratumoral_nodule(tps[t].lesions))
        ct.append(baseline_ct and is_ct(tps[t]))
    target_ids = tuple(b.id for b in targets)
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
    )


def size_reference(inputs: ChoiInputs, index: int, pd_reference: ChoiPdReference) -> Decimal | None:
    """The size the Choi PD test compares with: the nadir before ``index`` (default) or the baseline [P]."""
    if pd_reference is ChoiPdReference.BASELINE:
        return inputs.sums[0]
    if index < len(inputs.nadirs):
        return inputs.nadirs[index]
    complete = [s for s in inputs.sums if s is not None]
    return min(complete) if complete and inputs.sums[0] is not None else None


def _choi_assessment(
    current: TimePoint,
    series: ChoiInputs,
    index: int,
    modified: bool,
    category: Category,
    target: Category,
    rule: str,
    ne_reason: str | None = None,
) -> TimepointAssessment:
    """The Choi (or mChoi) result at ``index``: the category and rule, plus the shared sizes and densities."""
    size = series.sums[index]
    return TimepointAssessment(
        index=index,
        date=current.date,
        category=category,
        target=target,
        non_target=series.non_target[index],
        new_lesion=series.new_lesion[index],
        sum_mm=size,
        partial_sum_mm=series.partial_sums[index] if size is None else None,
        baseline_sum_mm=series.sums[0],
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
    )


def choi_timepoint(timeline: Timeline, series: ChoiInputs, index: int, modified: bool) -> TimepointAssessment:
    """Choi (or modified Choi) response at follow-up ``index`` (docs/criteria.md §4.3)."""
    current = timeline.timepoints[index]
    baseline_size, size = series.sums[0], series.sums[index]
    reference = series.references[index]
    density = series.density[index]
    assert density is not None
    non_target = series.non_target[index]

    if not series.ct[index]:
        baseline = timeline.baseline
        reason = f"Choi is CT-only (baseline {baseline.modality}, follow-up {current.modality})"
        return _choi_assessment(
            current, series, index, modified, Category.NE, Category.NE, "choi_ct_only", reason
        )
    target_reason: str | None = None
    if not series.target_ids or baseline_size is None:
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
        return _choi_assessment(current, series, index, modified, Category.PD, target, "choi_pd_new_lesion")
    if target is Category.PD:
        return _choi_assessment(current, series, index, modified, Category.PD, target, target_rule)
    if non_target is Category.PD:
        # Not in Choi's PD row, but PR requires no obvious progression of non-measurable disease [P].
        return _choi_assessment(current, series, index, modified, Category.PD, target, "choi_pd_non_target")
    if target is Category.NE or target is Category.NONE:
        return _choi_assessment(
            current, series, index, modified, Category.NE, target, target_rule, target_reason
        )
    if target is Category.CR and non_target is not Category.CR and non_target is not Category.NONE:
        # Targets gone but non-targets persist: a size decrease of 100 %, so PR (as RECIST Table 1).
        rule = "choi_pr_size_targets_gone_non_target_present"
        return _choi_assessment(current, series, index, modified, Category.PR, target, rule)
    return _choi_assessment(current, series, index, modified, target, target, target_rule, target_reason)


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
    baseline_size = series.sums[0]
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
    followups = tuple(
        choi_timepoint(timeline, series, index, modified) for index in range(1, len(timeline.timepoints))
    )
    bor, pd_index = best_response(followups, timeline.context.treatment_start, timeline.options.min_sd_days)
    return CriterionResult(
        criterion=Criterion.MCHOI if modified else Criterion.CHOI,
        timepoints=(None, *followups),
        bor=bor,
        bor_rule="best response up to the first PD; SD counts from min_sd_days after treatment start [P]",
        pd_date=timeline.timepoints[pd_index].date if pd_index is not None else None,
        pd_index=pd_index,
        baseline_sum_mm=series.sums[0],
        next_thresholds=next_thresholds(timeline, series, modified),
    )


def assess_choi(timeline: Timeline) -> CriterionResult:
    """Choi response at every follow-up time point (docs/criteria.md §4.1-§4.3)."""
    return _assess(timeline, modified=False)


def assess_mchoi(timeline: Timeline) -> CriterionResult:
    """Modified Choi (Nathan 2010): PR needs both the size and the density decrease (criteria §4.4)."""
    return _assess(timeline, modified=True)
