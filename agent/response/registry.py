"""Lesion registry, tracking and evidence checks (docs/criteria.md §1.3, §1.6, §1.8): who is who across
time points, and which records and time points the criteria may use.

Baseline targets and non-targets keep their id for life. Every record is mapped to a baseline lesion, to a
genuinely new lesion, or reported as a tracking problem. A record labelled ``new`` whose id was already seen
as a target/non-target (or with ``prior_visible``) is not new: it continues the earlier lesion. The evidence
checks set aside what the criteria must not use: a time point with an implausible diameter or a cm/mm slip is
not assessed (``excluded``), a self-contradictory target record is read as not assessed, and baseline targets
without a value are listed (``baseline_unmeasured``). Shared by every criterion and by the alert rules; pure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

from agent.response.model import Lesion, LesionKind, LesionStatus, Options, Timeline

TEN_MM = 10
#: A tenfold change of every paired target, within these bounds, reads as a cm/mm slip [P].
SLIP_UP = (Decimal(8), Decimal("12.5"))
SLIP_DOWN = (Decimal("0.08"), Decimal("0.125"))


class Problem(StrEnum):
    UNKNOWN_ID = "unknown_id"  # target / non-target id not declared at baseline -> LESION_TRACKING_MISMATCH
    KIND_CHANGED = "kind_changed"  # baseline target recorded as non-target or vice versa -> MISMATCH
    ORGAN_CHANGED = "organ_changed"  # same id, other organ -> LESION_TRACKING_MISMATCH
    PREVIOUSLY_SEEN = "previously_seen"  # 'new' lesion already seen -> NEW_LESION_PREVIOUSLY_SEEN
    IMPLAUSIBLE = "implausible"  # diameter outside the plausible range -> IMPLAUSIBLE_MEASUREMENT
    UNIT_SLIP = "unit_slip"  # tenfold jump of the paired targets -> IMPLAUSIBLE_MEASUREMENT
    INCONSISTENT = "inconsistent"  # record contradicts itself -> LESION_RECORD_INCONSISTENT


@dataclass(frozen=True, slots=True)
class TrackingProblem:
    timepoint: int
    lesion_id: str
    problem: Problem
    detail: str


@dataclass(frozen=True, slots=True)
class Registry:
    """Per time point, the records of each baseline target / non-target (``None`` when missing or not usable)
    and the genuinely new lesion records; ``first_seen`` gives the index where each new lesion id first
    appeared (equivocal or not). ``excluded[t]`` says why time point ``t`` is not assessed (``None``: it
    is)."""

    targets: tuple[Lesion, ...]  # baseline target records, in declaration order
    non_targets: tuple[Lesion, ...]
    target_records: tuple[tuple[Lesion | None, ...], ...]  # [t][i] record of targets[i] at t
    non_target_records: tuple[tuple[Lesion | None, ...], ...]
    new_records: tuple[tuple[Lesion, ...], ...]  # [t] genuinely new lesions recorded at t (any status)
    first_seen: dict[str, int]
    problems: tuple[TrackingProblem, ...]
    present_new: tuple[tuple[Lesion, ...], ...]
    unequivocal: tuple[tuple[Lesion, ...], ...]
    equivocal: tuple[tuple[Lesion, ...], ...]
    baseline_index: int = 0
    excluded: tuple[str | None, ...] = ()
    baseline_unmeasured: tuple[str, ...] = ()  # baseline targets without a value: the baseline sum is unknown

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

    def exclusion(self, t: int) -> str | None:
        """Why follow-up ``t`` is not assessed: its own evidence, else the baseline's; ``None`` when it is."""
        if not self.excluded:
            return None
        own = self.excluded[t]
        if own is not None:
            return own
        base = self.excluded[self.baseline_index]
        return None if base is None else f"the baseline is not assessed ({base})"

    def baseline_sum_unknown(self) -> str | None:
        """Why the baseline target sum is unknown, or ``None``."""
        if self.baseline_unmeasured:
            return f"baseline target(s) without a measured value: {', '.join(self.baseline_unmeasured)}"
        return None


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


# --------------------------------------------------------------------------------------------------------
# Evidence checks (docs/criteria.md §1.8)

_GONE = frozenset({LesionStatus.DISAPPEARED, LesionStatus.COALESCED, LesionStatus.ABSENT})


def _fmt(value: Decimal) -> str:
    return f"{value.normalize():f}"


def implausible(lesion: Lesion, options: Options) -> str | None:
    """Why a record's diameters are outside the plausible range, or ``None``.

    Long/short axes and fragments must lie within ``plausible_min_mm``-``plausible_max_mm`` (0 is allowed
    only on a lesion recorded gone); viable diameters within 0-``plausible_max_mm`` (0 = no enhancement).
    """
    low, high = options.plausible_min_mm, options.plausible_max_mm
    gone = lesion.status in _GONE
    checks: list[tuple[str, Decimal | None, Decimal]] = [
        ("long axis", lesion.long_axis_mm, low),
        ("short axis", lesion.short_axis_mm, low),
        ("viable long axis", lesion.viable_long_axis_mm, Decimal(0)),
        ("viable perpendicular axis", lesion.viable_perp_axis_mm, Decimal(0)),
    ]
    checks += [(f"fragment {i + 1}", v, low) for i, v in enumerate(lesion.fragments_mm or ())]
    for name, value, minimum in checks:
        if value is None or (value == 0 and (gone or minimum == 0)):
            continue
        if value < minimum or value > high:
            return (
                f"{lesion.id} {name} {_fmt(value)} mm is outside the plausible range "
                f"{_fmt(low)}-{_fmt(high)} mm"
            )
    return None


def inconsistent(record: Lesion, present_targets: set[str]) -> str | None:
    """Why a target record contradicts itself, or ``None`` (docs/criteria.md §1.8)."""
    if record.status is LesionStatus.DISAPPEARED:
        sizes = [v for v in (record.long_axis_mm, record.short_axis_mm, *(record.fragments_mm or ())) if v]
        if sizes:
            return f"{record.id} is recorded disappeared but carries a diameter ({_fmt(sizes[0])} mm)"
    if record.status is LesionStatus.COALESCED and record.merged_into not in present_targets:
        where = "names no lesion" if record.merged_into is None else f"names {record.merged_into!r}"
        return (
            f"{record.id} is recorded coalesced but merged_into {where}, not a target measured here, "
            "so the merged diameter may be missing from the sum"
        )
    return None


def has_value(lesion: Lesion) -> bool:
    """Whether a target record contributes a known value to the sum (docs/criteria.md §2.3)."""
    if lesion.fragments_mm:
        return True
    if lesion.status in (LesionStatus.DISAPPEARED, LesionStatus.COALESCED, LesionStatus.TOO_SMALL):
        return True
    if lesion.status is LesionStatus.NOT_ASSESSED:
        return False
    return lesion.diameter_mm is not None


def _carries_size(lesion: Lesion) -> bool:
    """A target record that can carry a merged diameter: measured (or too small) with a value."""
    if lesion.status not in (LesionStatus.MEASURED, LesionStatus.TOO_SMALL):
        return False
    return (
        bool(lesion.fragments_mm) or lesion.status is LesionStatus.TOO_SMALL or lesion.diameter_mm is not None
    )


def _measured(lesion: Lesion | None) -> Decimal | None:
    if lesion is None or lesion.status is not LesionStatus.MEASURED or lesion.fragments_mm:
        return None
    value = lesion.diameter_mm
    return value if value is not None and value > 0 else None


def unit_slip(
    previous: tuple[Lesion | None, ...], current: tuple[Lesion | None, ...], label: str
) -> str | None:
    """A tenfold change of every target measured at both visits, read as a cm/mm slip [P]."""
    pairs = [
        (a, b) for a, b in ((_measured(p), _measured(c)) for p, c in zip(previous, current, strict=True))
    ]
    paired = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not paired:
        return None
    ratios = [b / a for a, b in paired]
    up = all(SLIP_UP[0] <= r <= SLIP_UP[1] for r in ratios)
    down = len(paired) >= 2 and all(SLIP_DOWN[0] <= r <= SLIP_DOWN[1] for r in ratios)
    if not (up or down):
        return None
    before = sum((a for a, _ in paired), Decimal(0))
    now = sum((b for _, b in paired), Decimal(0))
    return (
        f"the targets measured at both visits sum to {_fmt(now)} mm against {_fmt(before)} mm at {label}: "
        "a tenfold change, consistent with a cm/mm slip"
    )


def build_registry(timeline: Timeline) -> Registry:
    """Map every record of ``timeline`` and run the evidence checks."""
    tps = timeline.timepoints
    options = timeline.options
    b = timeline.baseline_index
    baseline = tps[b]
    problems: list[TrackingProblem] = []
    excluded: list[str | None] = []
    for t, tp in enumerate(tps):
        reason = None
        if t >= b:
            for lesion in tp.lesions:
                why = implausible(lesion, options)
                if why is not None:
                    problems.append(TrackingProblem(t, lesion.id, Problem.IMPLAUSIBLE, why))
                    reason = reason or f"implausible measurement: {why}"
        excluded.append(reason)
    targets = tuple(les for les in baseline.lesions if les.kind is LesionKind.TARGET)
    non_targets = tuple(les for les in baseline.lesions if les.kind is LesionKind.NON_TARGET)
    base_by_id = {les.id: les for les in targets + non_targets}
    t_index = {les.id: i for i, les in enumerate(targets)}
    nt_index = {les.id: i for i, les in enumerate(non_targets)}
    first_seen: dict[str, int] = {}
    not_new: set[str] = set()  # ids established as not new (prior_visible)
    target_records: list[tuple[Lesion | None, ...]] = []
    nt_records: list[tuple[Lesion | None, ...]] = []
    new_records: list[tuple[Lesion, ...]] = []
    for t in range(len(tps)):
        if t == b:
            target_records.append(tuple(targets))
            nt_records.append(tuple(non_targets))
            new_records.append(())
            continue
        track = t > b  # pre-treatment history is mapped for display, never checked or assessed
        trec: list[Lesion | None] = [None] * len(targets)
        nrec: list[Lesion | None] = [None] * len(non_targets)
        new: list[Lesion] = []
        continuations: list[tuple[Lesion, Lesion]] = []
        ids = [rec.id for rec in tps[t].lesions]
        duplicated = {i for i in ids if ids.count(i) > 1}
        for lesion_id in sorted(duplicated) if track else ():
            problems.append(
                TrackingProblem(
                    t,
                    lesion_id,
                    Problem.INCONSISTENT,
                    f"{ids.count(lesion_id)} records carry the id {lesion_id} at this time point",
                )
            )
        for rec in tps[t].lesions:
            if rec.id in duplicated and rec.id in base_by_id:
                continue  # which record is the baseline lesion is unknown: not assessed
            if rec.id in duplicated and any(n.id == rec.id for n in new):
                continue
            base = base_by_id.get(rec.id)
            kind = rec.kind
            if kind is LesionKind.NEW:
                if base is not None or rec.prior_visible or rec.id in not_new:
                    seen = "a baseline lesion" if base is not None else "visible on an earlier scan"
                    if track:
                        problems.append(
                            TrackingProblem(
                                t,
                                rec.id,
                                Problem.PREVIOUSLY_SEEN,
                                f"lesion {rec.id} recorded as new was {seen}",
                            )
                        )
                    if base is not None:
                        continuations.append((rec, base))
                    else:
                        not_new.add(rec.id)
                    continue
                if track:
                    new.append(rec)
                    if rec.status is not LesionStatus.ABSENT and rec.id not in first_seen:
                        first_seen[rec.id] = t
                continue
            if base is None:
                if track:
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
                if track:
                    problems.append(
                        TrackingProblem(
                            t,
                            rec.id,
                            Problem.KIND_CHANGED,
                            f"lesion {rec.id} was a {base.kind.value} at baseline, recorded as {kind.value}",
                        )
                    )
                continue
            if base.organ != rec.organ and track:
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
        if track:
            present_ids = {r.id for r in trec if r is not None and _carries_size(r)}
            for i, record in enumerate(trec):
                why = inconsistent(record, present_ids) if record is not None else None
                if record is not None and why is not None:
                    problems.append(TrackingProblem(t, record.id, Problem.INCONSISTENT, why))
                    trec[i] = replace(record, status=LesionStatus.NOT_ASSESSED)
        target_records.append(tuple(trec))
        nt_records.append(tuple(nrec))
        new_records.append(tuple(new))
    # baseline targets without a value
    present_at_base = {r.id for r in targets if _carries_size(r)}
    unmeasured: list[str] = []
    base_targets = list(targets)
    for i, rec in enumerate(base_targets):
        why = inconsistent(rec, present_at_base)
        if why is not None:
            problems.append(TrackingProblem(b, rec.id, Problem.INCONSISTENT, why))
            base_targets[i] = replace(rec, status=LesionStatus.NOT_ASSESSED)
        if not has_value(base_targets[i]):
            unmeasured.append(rec.id)
    target_records[b] = tuple(base_targets)
    # cm/mm slips: each follow-up against the previous time point that is assessed
    last = b
    for t in range(b + 1, len(tps)):
        if excluded[t] is not None:
            continue
        why = unit_slip(target_records[last], target_records[t], timeline.label(last))
        if why is not None:
            problems.append(TrackingProblem(t, "", Problem.UNIT_SLIP, why))
            excluded[t] = f"implausible measurement: {why}"
            continue
        last = t
    # a time point that is not assessed holds no usable record
    for t in range(b + 1, len(tps)):
        if excluded[t] is not None or excluded[b] is not None:
            target_records[t] = (None,) * len(targets)
            nt_records[t] = (None,) * len(non_targets)
            new_records[t] = ()
    present = tuple(_present_new(recs) for recs in new_records)
    return Registry(
        present_new=present,
        unequivocal=tuple(
            _with_status(p, LesionStatus.UNEQUIVOCAL, LesionStatus.UNEQUIVOCAL_PROGRESSION) for p in present
        ),
        equivocal=tuple(_with_status(p, LesionStatus.EQUIVOCAL) for p in present),
        targets=tuple(base_targets),
        non_targets=non_targets,
        target_records=tuple(target_records),
        non_target_records=tuple(nt_records),
        new_records=tuple(new_records),
        first_seen=first_seen,
        problems=tuple(problems),
        baseline_index=b,
        excluded=tuple(excluded),
        baseline_unmeasured=tuple(unmeasured),
    )


def _present_new(records: tuple[Lesion, ...]) -> tuple[Lesion, ...]:
    """The new lesion records that are present and count as new (see ``counts_as_new``)."""
    return tuple(n for n in records if n.status is not LesionStatus.ABSENT and counts_as_new(n))


def _with_status(records: tuple[Lesion, ...], *statuses: LesionStatus) -> tuple[Lesion, ...]:
    return tuple(n for n in records if n.status in statuses)
