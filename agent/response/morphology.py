"""Chun morphologic response of colorectal liver metastases on bevacizumab (Chun 2009; docs/criteria.md §7).

Each liver target lesion is given a morphology group (1 = homogeneous hypoattenuating with a thin sharp
interface, 3 = heterogeneous with a thick poorly defined interface, 2 = in between); the lesion responds
*optimally* when it reaches group 1 and *incompletely* when it goes from group 3 to group 2. The patient-level
response is the worst lesion-level response [P]. Purely morphological: new lesions and extrahepatic disease
are RECIST's business. Never imports anything but the standard library and ``agent.response``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from agent.response.model import (
    Category,
    ChunAttenuation,
    ChunInterface,
    ChunRim,
    Criterion,
    CriterionResult,
    Lesion,
    LesionDetail,
    LesionStatus,
    Timeline,
    TimePoint,
    TimepointAssessment,
)
from agent.response.registry import build_registry

CITATION = (
    "Chun YS et al. JAMA 2009;302:2338-2344 (morphologic criteria); "
    "Dioguardi Burgio M et al. Eur Radiol 2025 (ESGAR ESR Essentials)"
)

#: Lesion-level responses from best to worst (the patient level takes the worst).
_RANK = {Category.OPTIMAL: 0, Category.INCOMPLETE: 1, Category.NO_RESPONSE: 2}


@dataclass(frozen=True, slots=True)
class LesionMorphology:
    """One liver target lesion compared with its baseline morphology; ``response`` is ``None`` when the
    lesion is left out of the patient response (group 1 at baseline and still group 1)."""

    lesion_id: str
    baseline_group: int | None
    group: int | None
    response: Category | None  # optimal / incomplete / none / NE, or None: left out
    reason: str | None = None

    def detail(self) -> LesionDetail:
        result = self.response.value if self.response is not None else "left out"
        if self.reason:
            result = f"{result}: {self.reason}"
        return LesionDetail(
            self.lesion_id,
            "chun_group",
            None if self.baseline_group is None else Decimal(self.baseline_group),
            None if self.group is None else Decimal(self.group),
            result,
            self.response is not None,
        )


def is_ct(timepoint: TimePoint) -> bool:
    """Chun (like Choi) is validated on CT only."""
    modality = timepoint.modality
    return modality == "CT" or (modality or "").strip().upper() == "CT"


def morphology_group(lesion: Lesion) -> int | None:
    """The Chun group of a lesion: the radiologist's group if given, else derived from the three features.

    G1: homogeneous hypoattenuating, sharp interface, no rim. G3: heterogeneous with a poorly defined
    interface. Anything else with all features known is G2. ``None`` when neither is available.
    """
    if lesion.chun_group is not None:
        return lesion.chun_group
    attenuation, interface, rim = lesion.chun_attenuation, lesion.chun_interface, lesion.chun_rim
    if (
        attenuation is ChunAttenuation.HOMOGENEOUS_HYPOATTENUATING
        and interface is ChunInterface.SHARP
        and rim is ChunRim.ABSENT
    ):
        return 1
    if attenuation is ChunAttenuation.HETEROGENEOUS and interface is ChunInterface.POORLY_DEFINED:
        return 3
    if attenuation is None or interface is None or rim is None:
        return None
    return 2


def lesion_response(baseline_group: int, group: int) -> Category | None:
    """Lesion-level Chun response: G3/G2 -> G1 optimal, G3 -> G2 incomplete, otherwise none.

    A lesion already in group 1 at baseline cannot improve: it is left out (``None``) unless it worsens,
    which is no response (docs/criteria.md §7.2).
    """
    if baseline_group == 1:
        return None if group == 1 else Category.NO_RESPONSE
    if group == 1:
        return Category.OPTIMAL
    if baseline_group == 3 and group == 2:
        return Category.INCOMPLETE
    return Category.NO_RESPONSE


def worst_lesion_response(responses: list[Category]) -> Category:
    """Patient-level Chun response: the worst lesion-level response [P]; NE if any lesion is NE or none."""
    if not responses or Category.NE in responses:
        return Category.NE
    return max(responses, key=_RANK.__getitem__)


def _is_liver(lesion: Lesion) -> bool:
    """Chun assesses the liver target lesions declared at baseline."""
    return lesion.organ == "liver" or lesion.organ.strip().lower() == "liver"


def compare_lesion(baseline_lesion: Lesion, current: Lesion | None) -> LesionMorphology:
    """Compare one liver target with its baseline morphology (a disappeared lesion is optimal)."""
    lesion_id = baseline_lesion.id
    baseline_group = morphology_group(baseline_lesion)
    if baseline_group is None:
        group = morphology_group(current) if current is not None else None
        return LesionMorphology(lesion_id, None, group, Category.NE, "no baseline morphology group")
    if current is not None and current.status is LesionStatus.DISAPPEARED:
        if baseline_group == 1:
            return LesionMorphology(lesion_id, 1, None, None, "group 1 at baseline, now disappeared")
        return LesionMorphology(lesion_id, baseline_group, None, Category.OPTIMAL, "disappeared")
    group = morphology_group(current) if current is not None else None
    if group is None:
        why = "not assessed" if current is None else "no morphology group"
        return LesionMorphology(lesion_id, baseline_group, None, Category.NE, why)
    response = lesion_response(baseline_group, group)
    reason = "group 1 at baseline, cannot improve" if response is None else None
    if baseline_group == 1 and response is Category.NO_RESPONSE:
        reason = "group 1 at baseline, worsened"
    return LesionMorphology(lesion_id, baseline_group, group, response, reason)


def _chun_assessment(
    current: TimePoint,
    index: int,
    category: Category,
    rule: str,
    ne_reason: str | None = None,
    notes: tuple[str, ...] = (),
    lesions: tuple[LesionMorphology, ...] = (),
) -> TimepointAssessment:
    return TimepointAssessment(
        index=index,
        date=current.date,
        category=category,
        ne_reason=ne_reason,
        rule=rule,
        citation=CITATION,
        notes=notes,
        lesions=tuple(m.detail() for m in lesions),
    )


def chun_timepoint(
    timeline: Timeline,
    index: int,
    targets: Sequence[Lesion],
    records: Sequence[Lesion | None],
    excluded: str | None = None,
) -> TimepointAssessment:
    """Chun response at follow-up ``index``: CT at both time points, all liver targets grouped, worst wins.

    ``targets`` are the baseline liver targets and ``records`` their records at ``index`` (``None``: missing);
    ``excluded`` says why the evidence checks set the time point aside.
    """
    baseline, current = timeline.baseline, timeline.timepoints[index]
    if not is_ct(baseline) or not is_ct(current):
        reason = f"Chun is validated on CT only (baseline {baseline.modality}, follow-up {current.modality})"
        return _chun_assessment(current, index, Category.NE, "chun_ct_only", reason)
    if excluded is not None:
        return _chun_assessment(current, index, Category.NE, "chun_not_assessed", excluded)
    if not targets:
        return _chun_assessment(
            current, index, Category.NE, "chun_liver_targets", "no liver target lesion at baseline"
        )
    lesions = tuple(compare_lesion(target, record) for target, record in zip(targets, records, strict=True))
    detail: tuple[str, ...] = ()  # the per-lesion groups are in ``lesions``
    responses = [m.response for m in lesions if m.response is not None]
    if not responses:
        reason = "every liver target was group 1 at baseline and none worsened: nothing to improve"
        return _chun_assessment(current, index, Category.NE, "chun_all_group_1", reason, detail, lesions)
    category = worst_lesion_response(responses)
    if category is Category.NE:
        reasons = "; ".join(f"{m.lesion_id}: {m.reason}" for m in lesions if m.response is Category.NE)
        return _chun_assessment(
            current, index, Category.NE, "chun_lesion_not_evaluable", reasons, detail, lesions
        )
    left_out = [m.lesion_id for m in lesions if m.response is None]
    if left_out:
        detail = (*detail, f"left out (group 1 at baseline): {', '.join(left_out)}")
    if len(set(responses)) > 1:
        detail = (*detail, "lesions disagree; the patient-level response is the worst lesion-level response")
    return _chun_assessment(current, index, category, "chun_worst_lesion", None, detail, lesions)


def best_morphologic_response(categories: list[Category]) -> Category:
    """Best Chun response over the follow-ups: optimal > incomplete > none; NE when none was evaluable."""
    evaluable = [c for c in categories if c in _RANK]
    return min(evaluable, key=_RANK.__getitem__) if evaluable else Category.NE


def assess(timeline: Timeline) -> CriterionResult:
    """Chun morphologic response at every follow-up time point."""
    registry = build_registry(timeline)
    liver = [i for i, lesion in enumerate(registry.targets) if _is_liver(lesion)]
    targets = [registry.targets[i] for i in liver]
    followups = tuple(
        chun_timepoint(
            timeline, t, targets, [registry.target_records[t][i] for i in liver], registry.exclusion(t)
        )
        for t in timeline.followups
    )
    bor = best_morphologic_response([tp.category for tp in followups])
    return CriterionResult(
        criterion=Criterion.CHUN,
        timepoints=(*([None] * (registry.baseline_index + 1)), *followups),
        bor=bor,
        bor_rule="best lesion-level-worst response over the follow-ups (optimal > incomplete > none)",
    )
