"""Lesion registry and tracking (docs/criteria.md §1.3): who is who across time points.

Baseline targets and non-targets keep their id for life. Every follow-up record is mapped to a baseline
lesion, to a genuinely new lesion, or reported as a tracking problem. A record labelled ``new`` whose id was
already seen as a target/non-target (or with ``prior_visible``) is not new: it continues the earlier lesion.
Shared by every criterion and by the alert rules; pure and cheap (built once per timeline).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agent.response.model import Lesion, LesionKind, LesionStatus, Timeline

TEN_MM = 10


class Problem(StrEnum):
    UNKNOWN_ID = "unknown_id"  # target / non-target id not declared at baseline -> LESION_TRACKING_MISMATCH
    KIND_CHANGED = "kind_changed"  # baseline target recorded as non-target or vice versa -> MISMATCH
    ORGAN_CHANGED = "organ_changed"  # same id, other organ -> LESION_TRACKING_MISMATCH
    PREVIOUSLY_SEEN = "previously_seen"  # 'new' lesion already seen -> NEW_LESION_PREVIOUSLY_SEEN


@dataclass(frozen=True, slots=True)
class TrackingProblem:
    timepoint: int
    lesion_id: str
    problem: Problem
    detail: str


@dataclass(frozen=True, slots=True)
class Registry:
    """Per time point, the records of each baseline target / non-target (``None`` when missing) and the
    genuinely new lesion records; ``first_seen`` gives the index where each new lesion id first appeared
    (equivocal or not)."""

    targets: tuple[Lesion, ...]  # baseline target records, in declaration order
    non_targets: tuple[Lesion, ...]
    target_records: tuple[tuple[Lesion | None, ...], ...]  # [t][i] record of targets[i] at t
    non_target_records: tuple[tuple[Lesion | None, ...], ...]
    new_records: tuple[tuple[Lesion, ...], ...]  # [t] genuinely new lesions recorded at t (any status)
    first_seen: dict[str, int]
    problems: tuple[TrackingProblem, ...]

    present_new: tuple[tuple[Lesion, ...], ...] = ()  # filled by build_registry (see new_present)
    unequivocal: tuple[tuple[Lesion, ...], ...] = ()
    equivocal: tuple[tuple[Lesion, ...], ...] = ()

    def new_present(self, t: int) -> tuple[Lesion, ...]:
        """New lesions present at ``t`` (unequivocal or equivocal), nodes only from 10 mm short axis."""
        return self.present_new[t]

    def unequivocal_new(self, t: int) -> tuple[Lesion, ...]:
        """New lesions present at ``t`` that are unequivocal (they give RECIST PD)."""
        return self.unequivocal[t]

    def equivocal_new(self, t: int) -> tuple[Lesion, ...]:
        return self.equivocal[t]

    def problems_at(self, t: int) -> tuple[TrackingProblem, ...]:
        return tuple(p for p in self.problems if p.timepoint == t)


def counts_as_new(lesion: Lesion) -> bool:
    """A new lymph node counts only with a short axis >= 10 mm (RECIST FAQ); other new lesions always."""
    if lesion.is_node and lesion.short_axis_mm is not None:
        return lesion.short_axis_mm >= TEN_MM
    return True


def _as_continuation(record: Lesion, baseline: Lesion) -> Lesion:
    """A record mislabelled ``new`` read as the continuation of a baseline lesion of another kind."""
    if baseline.kind is LesionKind.TARGET:
        status = LesionStatus.MEASURED if record.diameter_mm is not None else LesionStatus.NOT_ASSESSED
    else:
        status = LesionStatus.ABSENT if record.status is LesionStatus.ABSENT else LesionStatus.PRESENT
    return Lesion(
        id=record.id,
        organ=record.organ,
        kind=baseline.kind,
        status=status,
        is_node=baseline.is_node,
        long_axis_mm=record.long_axis_mm,
        short_axis_mm=record.short_axis_mm,
        mean_hu=record.mean_hu,
        phase=record.phase,
        increased_since_prior=record.increased_since_prior,
        viable_long_axis_mm=record.viable_long_axis_mm,
        viable_perp_axis_mm=record.viable_perp_axis_mm,
        chun_group=record.chun_group,
        chun_attenuation=record.chun_attenuation,
        chun_interface=record.chun_interface,
        chun_rim=record.chun_rim,
        ancillary=record.ancillary,
    )


def build_registry(timeline: Timeline) -> Registry:
    baseline = timeline.baseline
    targets = tuple(les for les in baseline.lesions if les.kind is LesionKind.TARGET)
    non_targets = tuple(les for les in baseline.lesions if les.kind is LesionKind.NON_TARGET)
    base_by_id = {les.id: les for les in targets + non_targets}
    t_index = {les.id: i for i, les in enumerate(targets)}
    nt_index = {les.id: i for i, les in enumerate(non_targets)}
    problems: list[TrackingProblem] = []
    first_seen: dict[str, int] = {}
    not_new: set[str] = set()  # ids established as not new (prior_visible)
    target_records: list[tuple[Lesion | None, ...]] = [tuple(targets)]
    nt_records: list[tuple[Lesion | None, ...]] = [tuple(non_targets)]
    new_records: list[tuple[Lesion, ...]] = [()]
    for t in range(1, len(timeline.timepoints)):
        trec: list[Lesion | None] = [None] * len(targets)
        nrec: list[Lesion | None] = [None] * len(non_targets)
        new: list[Lesion] = []
        continuations: list[tuple[Lesion, Lesion]] = []
        for rec in timeline.timepoints[t].lesions:
            base = base_by_id.get(rec.id)
            kind = rec.kind
            if kind is LesionKind.NEW:
                if base is not None or rec.prior_visible or rec.id in not_new:
                    seen = "a baseline lesion" if base is not None else "visible on an earlier scan"
                    problems.append(
                        TrackingProblem(
                            t, rec.id, Problem.PREVIOUSLY_SEEN, f"lesion {rec.id} recorded as new was {seen}"
                        )
                    )
                    if base is not None:
                        continuations.append((rec, base))
                    else:
                        not_new.add(rec.id)
                    continue
                new.append(rec)
                if rec.status is not LesionStatus.ABSENT and rec.id not in first_seen:
                    first_seen[rec.id] = t
                continue
            if base is None:
                problems.append(
                    TrackingProblem(
                        t,
                        rec.id,
                        Problem.UNKNOWN_ID,
                        f"{kind.value} {rec.id} was not declared at baseline",
                    )
                )
                continue
            if base.kind is not kind:
                problems.append(
                    TrackingProblem(
                        t,
                        rec.id,
                        Problem.KIND_CHANGED,
                        f"lesion {rec.id} was a {base.kind.value} at baseline, recorded as {kind.value}",
                    )
                )
                continue
            if base.organ != rec.organ:
                problems.append(
                    TrackingProblem(
                        t,
                        rec.id,
                        Problem.ORGAN_CHANGED,
                        f"lesion {rec.id} moved from {base.organ} to {rec.organ}",
                    )
                )
            if kind is LesionKind.TARGET:
                trec[t_index[rec.id]] = rec
            else:
                nrec[nt_index[rec.id]] = rec
        for rec, base in continuations:
            if base.kind is LesionKind.TARGET and trec[t_index[base.id]] is None:
                trec[t_index[base.id]] = _as_continuation(rec, base)
            elif base.kind is LesionKind.NON_TARGET and nrec[nt_index[base.id]] is None:
                nrec[nt_index[base.id]] = _as_continuation(rec, base)
        target_records.append(tuple(trec))
        nt_records.append(tuple(nrec))
        new_records.append(tuple(new))
    present = tuple(_present_new(recs) for recs in new_records)
    return Registry(
        present_new=present,
        unequivocal=tuple(_with_status(p, LesionStatus.UNEQUIVOCAL) for p in present),
        equivocal=tuple(_with_status(p, LesionStatus.EQUIVOCAL) for p in present),
        targets=targets,
        non_targets=non_targets,
        target_records=tuple(target_records),
        non_target_records=tuple(nt_records),
        new_records=tuple(new_records),
        first_seen=first_seen,
        problems=tuple(problems),
    )


def _present_new(records: tuple[Lesion, ...]) -> tuple[Lesion, ...]:
    """The new lesion records that are present and count as new (see ``counts_as_new``)."""
    if not records:
        return ()
    return tuple(n for n in records if n.status is not LesionStatus.ABSENT and counts_as_new(n))


def _with_status(records: tuple[Lesion, ...], status: LesionStatus) -> tuple[Lesion, ...]:
    if not records:
        return ()
    return tuple(n for n in records if n.status is status)
