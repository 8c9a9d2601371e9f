"""Follow each lesion across studies: SR reports -> one time point per study -> a response timeline.

Steps, each recorded so a radiologist can see why:

1. **One time point per study.** Several SRs for one study (two readers, a corrected version) resolve to one:
   a report listed as predecessor by another is superseded; otherwise the newest completed, verified one
   wins. The others are listed as superseded.
2. **Identity.** A lesion at a later study is the same lesion when it has the same Tracking UID; else the same
   label within the patient: the radiologist's label a viewer wrote (OHIF's Comment or free-text finding)
   or a Tracking Identifier that is not a tool name, compared without case, spacing or punctuation, and only
   when unique in both reports (tool names such as ``Cornerstone3DTools@^0.1.0:Bidirectional`` are never
   an identity); else, when ``link_distance_mm`` is configured, the same
   organ and a 3D position within that distance. Several groups with one Tracking UID in one report are one
   split lesion (``fragments_mm``). Anything ambiguous is left unlinked and raises
   ``LESION_TRACKING_MISMATCH`` rather than guessed.
3. **Roles.** Roles stated in the SR (Baseline Category, our role codes) are used as they are. Otherwise, at
   the baseline, measurable lesions (RECIST: long axis >= 10 mm, or twice the slice thickness when thicker
   than 5 mm; nodes short axis >= 15 mm) are targets, largest first, at most 5 and at most 2 per organ; the
   rest are non-targets. At follow-up a lesion never seen before is a new-lesion candidate (``equivocal``,
   so the response core raises ``NEW_LESION_EQUIVOCAL``) unless the SR states it is new; seen again later,
   it is confirmed. Every inferred role carries a note.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from agent.response.model import (
    STATUSES_BY_KIND,
    Context,
    Lesion,
    LesionKind,
    LesionStatus,
    Options,
    Timeline,
    TimePoint,
)
from agent.response.parse import number
from agent.sr.context import StudyContext
from agent.sr.observations import Observation, label_key
from agent.sr.read import SRReport

MAX_TARGETS = 5
MAX_TARGETS_PER_ORGAN = 2
MEASURABLE_MM = Decimal(10)
NODE_MEASURABLE_MM = Decimal(15)
NODE_PATHOLOGICAL_MM = Decimal(10)


@dataclass(frozen=True, slots=True)
class ReportInput:
    """One readable SR with its study context and lesion observations."""

    report: SRReport
    context: StudyContext
    observations: tuple[Observation, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TrackingAlert:
    code: str  # LESION_TRACKING_MISMATCH
    timepoint: int
    lesion_id: str
    message: str


@dataclass(slots=True)
class TrackedLesion:
    lesion: Lesion
    notes: list[str]
    sources: list[dict[str, object]]


@dataclass(slots=True)
class TrackedTimePoint:
    timepoint: TimePoint
    study_uid: str | None
    report: ReportInput
    superseded: list[ReportInput]
    lesions: list[TrackedLesion]
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TrackedTimeline:
    context: Context
    timepoints: list[TrackedTimePoint]
    alerts: list[TrackingAlert]
    options: Options = field(default_factory=Options)
    # Pairings proposed where identity was not certain: the categories computed on them are provisional.
    pairings: list[dict[str, object]] = field(default_factory=list)

    @property
    def provisional(self) -> bool:
        return any(p.get("status") == "proposed" for p in self.pairings)

    def timeline(self) -> Timeline:
        return Timeline(
            context=self.context,
            timepoints=tuple(
                TimePoint(
                    date=tp.timepoint.date,
                    modality=tp.timepoint.modality,
                    phase=tp.timepoint.phase,
                    slice_thickness_mm=tp.timepoint.slice_thickness_mm,
                    contrast=tp.timepoint.contrast,
                    lesions=tuple(t.lesion for t in tp.lesions),
                )
                for tp in self.timepoints
            ),
            options=self.options,
        )


class TrackingError(ValueError):
    """No time point can be built (e.g. no report has a study date)."""


# --------------------------------------------------------------------------------------------------------
# 1. One time point per study


def _rank(item: ReportInput) -> tuple[int, int, str]:
    r = item.report
    complete = 1 if (r.completion_flag or "").upper() == "COMPLETE" else 0
    verified = 1 if (r.verification_flag or "").upper() == "VERIFIED" else 0
    when = f"{r.content_date.isoformat() if r.content_date else ''}{r.content_time or ''}"
    return complete, verified, when


def resolve_studies(items: Sequence[ReportInput]) -> list[tuple[ReportInput, list[ReportInput]]]:
    """Per study: (winning report, superseded reports), ordered by study date."""
    by_study: dict[str, list[ReportInput]] = {}
    for item in items:
        key = item.context.study_uid or item.report.sop_instance_uid or str(id(item))
        by_study.setdefault(key, []).append(item)
    resolved: list[tuple[ReportInput, list[ReportInput]]] = []
    for group in by_study.values():
        named_as_predecessor = {p for g in group for p in g.report.predecessors}
        live = [g for g in group if g.report.sop_instance_uid not in named_as_predecessor] or group
        winner = max(live, key=_rank)
        resolved.append((winner, [g for g in group if g is not winner]))
    undated = [w for w, _ in resolved if w.context.date is None]
    if undated:
        names = ", ".join(str(w.report.source or w.report.sop_instance_uid) for w in undated)
        raise TrackingError(f"no study date for {names}")
    resolved.sort(key=lambda pair: (pair[0].context.date or date.min, pair[0].context.study_uid or ""))
    return resolved


# --------------------------------------------------------------------------------------------------------
# 2 and 3. Identity and roles


@dataclass(slots=True)
class _Known:
    id: str
    kind: LesionKind
    organ: str
    uids: set[str]
    identifiers: set[str]
    location: tuple[float, ...] | None
    first_seen: int
    patient_id: str | None = None
    size: Decimal | None = None  # the diameter last measured
    label: str | None = None  # the name as last written

    def same_patient(self, patient_id: str | None) -> bool:
        return self.patient_id is None or patient_id is None or self.patient_id == patient_id


def _diameter(obs: Observation) -> Decimal | None:
    return obs.short_axis_mm if obs.is_node else obs.long_axis_mm


def _measurable(obs: Observation, slice_thickness: Decimal | None) -> bool:
    d = _diameter(obs)
    if d is None:
        return False
    if obs.is_node:
        return d >= NODE_MEASURABLE_MM
    floor = MEASURABLE_MM
    if slice_thickness is not None and slice_thickness > 5:
        floor = max(floor, 2 * slice_thickness)
    return d >= floor


def _key(obs: Observation) -> str | None:
    """The observation's name as matched across studies (``label_key``), None when it has none."""
    return label_key(obs.tracking_identifier) or None if obs.tracking_identifier else None


def _unique_identifiers(obs: Sequence[Observation]) -> set[str]:
    counts: dict[str, int] = {}
    for o in obs:
        if (key := _key(o)) is not None:
            counts[key] = counts.get(key, 0) + 1
    return {k for k, v in counts.items() if v == 1}


def _clusters(obs: Sequence[Observation]) -> list[list[Observation]]:
    """Groups of one report sharing a Tracking UID are one (split) lesion."""
    clusters: list[list[Observation]] = []
    by_uid: dict[str, list[Observation]] = {}
    for o in obs:
        if o.tracking_uid:
            if o.tracking_uid in by_uid:
                by_uid[o.tracking_uid].append(o)
                continue
            by_uid[o.tracking_uid] = [o]
            clusters.append(by_uid[o.tracking_uid])
        else:
            clusters.append([o])
    return clusters


def build_timeline(
    items: Sequence[ReportInput],
    context: Context | None = None,
    options: Options | None = None,
    *,
    link_distance_mm: float | None = None,
    confirmed: Mapping[tuple[str, str], tuple[str, str | None, str]] | None = None,
) -> TrackedTimeline:
    """Link the lesions of ``items`` across studies and build the response timeline.

    ``confirmed``: the radiologist's decisions, (SR SOP Instance UID, Tracking UID or "") of a measurement
    group -> (``same`` or ``new``, the earlier lesion's id for ``same``, who decided), and ("study:" + Study
    Instance UID, lesion id) of an earlier lesion that study does not measure -> (``absent`` or
    ``not_assessed``, None, who); they come before every other rule."""
    confirmed = confirmed or {}
    resolved = resolve_studies(items)
    if not resolved:
        raise TrackingError("no usable SR")
    patients = {w.report.patient_id for w, _ in resolved if w.report.patient_id}
    if len(patients) > 1:
        raise TrackingError(
            f"the SRs belong to {len(patients)} different patients (Patient ID); give one patient"
        )
    known: list[_Known] = []
    alerts: list[TrackingAlert] = []
    tracked: list[TrackedTimePoint] = []
    pairings: list[dict[str, object]] = []
    used_ids: set[str] = set()

    def fresh_id(obs: Observation, prefix: str) -> str:
        base = (obs.tracking_identifier or "").strip()
        if base and len(base) <= 64 and base not in used_ids:
            used_ids.add(base)
            return base
        n = len(used_ids) + 1
        while f"{prefix}{n}" in used_ids:
            n += 1
        used_ids.add(f"{prefix}{n}")
        return f"{prefix}{n}"

    for t, (winner, superseded) in enumerate(resolved):
        ctx = winner.context
        tp_notes = list(ctx.warnings)
        for s in superseded:
            tp_notes.append(f"superseded: {s.report.source or s.report.sop_instance_uid}")
        clusters = _clusters(winner.observations)
        unique_ids = _unique_identifiers(winner.observations)
        generic_ids = {
            o.tracking_identifier
            for o in winner.observations
            if o.tracking_identifier and _key(o) not in unique_ids
        }
        if generic_ids:
            tp_notes.append(
                "tracking identifiers repeated within the report are not lesion identities: "
                + ", ".join(sorted(generic_ids))[:200]
            )
        # Link each cluster to a known lesion.
        links: list[tuple[list[Observation], _Known | None, str, bool]] = []  # cluster, match, how, ambiguous
        for cluster in clusters:
            head = cluster[0]
            match: _Known | None = None
            how = ""
            ambiguous = False
            decision = confirmed.get(
                (str(head.source.get("sop_instance_uid") or ""), head.tracking_uid or "")
            )
            if decision is not None and t > 0:
                action, paired_with, who = decision
                target = next((k for k in known if k.id == paired_with), None)
                if action == "same" and target is not None:
                    match, how = target, f"{CONFIRMED} by {who}"
                pairings.append(
                    {
                        "timepoint": t,
                        "date": ctx.date.isoformat() if ctx.date else None,
                        "lesion": head.tracking_identifier,
                        "source": {
                            "sop_instance_uid": head.source.get("sop_instance_uid"),
                            "tracking_uid": head.tracking_uid,
                        },
                        "diameter_mm": number(_diameter(head)),
                        "paired_with": target.id if match is not None and target is not None else None,
                        "paired_label": target.label if match is not None and target is not None else None,
                        "basis": [
                            f"{'new lesion' if action == 'new' else 'same lesion'}, confirmed by {who}"
                        ],
                        "status": "confirmed"
                        if action == "new" or match is not None
                        else "unknown lesion id",
                    }
                )
                if action == "new":
                    links.append((cluster, None, "confirmed new", False))
                    continue
            if match is None and head.tracking_uid:
                match = next((k for k in known if head.tracking_uid in k.uids), None)
                how = "same Tracking UID"
            head_key = _key(head)
            if match is None and head_key in unique_ids:
                candidates = [
                    k for k in known if head_key in k.identifiers and k.same_patient(winner.report.patient_id)
                ]
                if len(candidates) == 1:
                    match = candidates[0]
                    how = (
                        f"same label {head.tracking_identifier!r}"
                        if head.source.get("label")
                        else "same Tracking Identifier text"
                    )
                elif len(candidates) > 1:
                    ambiguous, how = (
                        True,
                        f"Tracking Identifier {head.tracking_identifier!r} matches "
                        + (", ".join(k.id for k in candidates)),
                    )
            if match is None and not ambiguous and link_distance_mm is not None and head.location is not None:
                candidates = [
                    k
                    for k in known
                    if k.organ == head.organ
                    and k.location is not None
                    and math.dist(k.location, head.location) <= link_distance_mm
                ]
                if len(candidates) == 1:
                    match, how = candidates[0], f"same organ, position within {link_distance_mm} mm"
                elif len(candidates) > 1:
                    ambiguous, how = (
                        True,
                        "several earlier lesions lie within the linking distance: "
                        + (", ".join(k.id for k in candidates)),
                    )
            links.append((cluster, match, how, ambiguous))
        if t > 0:
            links = _propose(links, known, t, winner.report.patient_id, pairings, ctx.date, unique_ids)
        # Two clusters of one report linked to the same earlier lesion (other than by UID) are ambiguous.
        counts: dict[str, int] = {}
        for _, match, _, _ in links:
            if match is not None:
                counts[match.id] = counts.get(match.id, 0) + 1
        lesions: list[TrackedLesion] = []
        pending_baseline: list[tuple[list[Observation], TrackedLesion]] = []
        for cluster, match, how, ambiguous in links:
            head = cluster[0]
            notes: list[str] = []
            if match is not None and counts[match.id] > 1:
                notes.append(f"several groups of this report match lesion {match.id} ({how}); left unlinked")
                how = f"matches {match.id} together with other groups"
                match, ambiguous = None, True
            kind, status = head.kind, head.status
            if match is not None:
                lesion_id = match.id
                notes.append(f"linked to {match.id} at {resolved[match.first_seen][0].context.date}: {how}")
                if head.tracking_uid:
                    match.uids.add(head.tracking_uid)
                if (head_key := _key(head)) in unique_ids and head_key:
                    match.identifiers.add(head_key)
                if head.location is not None:
                    match.location = head.location
                match.size = _diameter(head) or match.size
                match.label = head.tracking_identifier or match.label
                if how.startswith(PROPOSED):
                    alerts.append(
                        TrackingAlert(
                            "LESION_PAIRING_PROVISIONAL",
                            t,
                            lesion_id,
                            f"{_named(head)} at {ctx.date} paired with {match.id} by a {how}; "
                            "confirm or re-pair it on the study page",
                        )
                    )
                if kind is None:
                    kind = match.kind
                    if match.kind is LesionKind.NEW and status is None:
                        status = LesionStatus.UNEQUIVOCAL
                        notes.append(
                            "new lesion seen again: confirmed (RECIST dates PD to its first appearance)"
                        )
                if match.organ != head.organ:
                    notes.append(f"organ {head.organ!r} differs from {match.organ!r} at first sight")
            else:
                lesion_id = fresh_id(head, "L")
                if ambiguous:
                    notes.append(f"identity ambiguous ({how}); left unlinked")
                    alerts.append(
                        TrackingAlert(
                            "LESION_TRACKING_MISMATCH",
                            t,
                            lesion_id,
                            f"lesion {lesion_id} at {ctx.date}: {how}; link it by hand",
                        )
                    )
                    if kind is None:
                        kind = LesionKind.NON_TARGET if t > 0 else None
                        if t > 0:
                            notes.append("kept as an unlinked non-target until the identity is confirmed")
                elif t > 0 and kind in (LesionKind.TARGET, LesionKind.NON_TARGET):
                    notes.append(f"stated {kind.value} but no earlier lesion has this identity")
                    alerts.append(
                        TrackingAlert(
                            "LESION_TRACKING_MISMATCH",
                            t,
                            lesion_id,
                            f"{kind.value} lesion {lesion_id} at {ctx.date} matches no earlier lesion",
                        )
                    )
                elif t > 0 and kind is None and how == "confirmed new":
                    kind, status = LesionKind.NEW, LesionStatus.UNEQUIVOCAL
                    notes.append("a new lesion, confirmed by the radiologist")
                elif t > 0 and kind is None:
                    kind, status = LesionKind.NEW, LesionStatus.EQUIVOCAL
                    notes.append(
                        "role inferred: identity never seen before, so a new-lesion candidate (equivocal) "
                        "to be confirmed by the radiologist"
                    )
                known.append(
                    _Known(
                        id=lesion_id,
                        kind=kind or LesionKind.NON_TARGET,
                        organ=head.organ,
                        uids={o.tracking_uid for o in cluster if o.tracking_uid},
                        identifiers={k} if (k := _key(head)) in unique_ids and k else set(),
                        location=head.location,
                        first_seen=t,
                        patient_id=winner.report.patient_id,
                        size=_diameter(head),
                        label=head.tracking_identifier,
                    )
                )
            tracked_lesion = TrackedLesion(
                lesion=_lesion(lesion_id, cluster, kind or LesionKind.NON_TARGET, status, notes),
                notes=notes + [n for o in cluster for n in o.notes],
                sources=[dict(o.source) for o in cluster],
            )
            lesions.append(tracked_lesion)
            if kind is None and t == 0:
                pending_baseline.append((cluster, tracked_lesion))
        if t == 0:
            _infer_baseline_roles(pending_baseline, lesions, known, ctx)
        if t > 0:
            _decided_absent(lesions, known, confirmed, ctx, t, pairings)
        timepoint = TimePoint(
            date=ctx.date or date.min,
            modality=ctx.modality,
            phase=ctx.phase,
            slice_thickness_mm=ctx.slice_thickness_mm,
            contrast=ctx.contrast,
            lesions=tuple(tl.lesion for tl in lesions),
        )
        tracked.append(
            TrackedTimePoint(timepoint, ctx.study_uid, winner, list(superseded), lesions, tp_notes)
        )
        if t > 0:
            seen = {tl.lesion.id for tl in lesions}
            missing = [
                k.id for k in known if k.first_seen == 0 and k.kind is LesionKind.TARGET and k.id not in seen
            ]
            if missing:
                tp_notes.append("baseline targets not reported in this study: " + ", ".join(missing))
    return TrackedTimeline(
        context or Context(None, "unknown"), tracked, alerts, options or Options(), pairings=pairings
    )


PROPOSED = "proposed pairing (provisional)"
CONFIRMED = "pairing confirmed"
POSITION_MM = 30.0


def _decided_absent(
    lesions: list[TrackedLesion],
    known: list[_Known],
    confirmed: Mapping[tuple[str, str], tuple[str, str | None, str]],
    ctx: StudyContext,
    t: int,
    pairings: list[dict[str, object]],
) -> None:
    """Earlier lesions this study does not measure that the radiologist called absent or not assessed."""
    seen = {tl.lesion.id for tl in lesions}
    for k in known:
        decision = confirmed.get((f"study:{ctx.study_uid}", k.id))
        if decision is None or k.id in seen or k.first_seen >= t:
            continue
        action, _, who = decision
        if action == "absent":
            status = LesionStatus.DISAPPEARED if k.kind is LesionKind.TARGET else LesionStatus.ABSENT
        elif action == "not_assessed":
            status = LesionStatus.NOT_ASSESSED
        else:
            continue
        if status not in STATUSES_BY_KIND[k.kind]:
            continue
        note = f"{action.replace('_', ' ')} at this study, confirmed by {who}"
        lesion = Lesion(
            id=k.id,
            organ=k.organ,
            kind=k.kind,
            status=status,
            long_axis_mm=Decimal(0) if status is LesionStatus.DISAPPEARED else None,
        )
        lesions.append(TrackedLesion(lesion=lesion, notes=[note], sources=[]))
        pairings.append(
            {
                "timepoint": t,
                "date": ctx.date.isoformat() if ctx.date else None,
                "lesion": k.label,
                "source": {"lesion_id": k.id},
                "diameter_mm": None,
                "paired_with": k.id,
                "paired_label": k.label,
                "basis": [note],
                "status": action,
            }
        )


def _named(obs: Observation) -> str:
    if obs.tracking_identifier:
        return f"lesion {obs.tracking_identifier!r}"
    d = _diameter(obs)
    return f"the {number(d)} mm lesion" if d is not None else "an unnamed lesion"


def _similarity(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return difflib.SequenceMatcher(None, label_key(a), label_key(b)).ratio()


def _propose(
    links: list[tuple[list[Observation], _Known | None, str, bool]],
    known: list[_Known],
    t: int,
    patient_id: str | None,
    pairings: list[dict[str, object]],
    when: date | None,
    unique: set[str],
) -> list[tuple[list[Observation], _Known | None, str, bool]]:
    """Pairings proposed for the lesions of time point ``t`` no certain identity linked, with earlier lesions
    not seen at ``t``: same organ/site (required), label similarity, rank by size, position in patient
    coordinates (same frame of reference). A pairing is proposed only when it is the best for both sides
    and has some evidence; the rest stay unlinked. A group whose name is repeated in its report (two
    lesions called the same) gets no proposal: the naming contradicts itself. Each proposal is recorded in
    ``pairings``."""
    taken = {m.id for _, m, _, _ in links if m is not None}
    open_ = [
        i
        for i, (c, m, how, amb) in enumerate(links)
        if m is None
        and not amb
        and c[0].kind is None
        and how != "confirmed new"
        and (c[0].tracking_identifier is None or _key(c[0]) in unique)
    ]
    earlier = [k for k in known if k.id not in taken and k.first_seen < t and k.same_patient(patient_id)]
    if not open_ or not earlier:
        return links

    def ranks(sizes: list[Decimal | None]) -> list[int | None]:
        order = sorted((s, i) for i, s in enumerate(sizes) if s is not None)
        out: list[int | None] = [None] * len(sizes)
        for r, (_, i) in enumerate(sorted(order, key=lambda x: -x[0])):
            out[i] = r
        return out

    now_rank = ranks([_diameter(links[i][0][0]) for i in open_])
    then_rank = ranks([k.size for k in earlier])
    scored: list[tuple[float, int, int, list[str]]] = []
    for a, i in enumerate(open_):
        head = links[i][0][0]
        for b, k in enumerate(earlier):
            if k.organ != head.organ:
                continue
            basis = [f"same site ({head.organ})"]
            score = 0.0
            sim = _similarity(head.tracking_identifier, k.label)
            if sim is not None:
                if sim < 0.5:
                    continue  # both named, differently
                score += sim
                basis.append(f"label similarity {sim:.2f}")
            if now_rank[a] is not None and now_rank[a] == then_rank[b]:
                score += 0.5
                basis.append(f"same size rank ({(now_rank[a] or 0) + 1})")
            if head.location is not None and k.location is not None:
                d = math.dist(head.location, k.location)
                if d > POSITION_MM:
                    continue
                score += 1.0
                basis.append(f"position {d:.0f} mm apart")
            if score > 0:
                scored.append((score, i, b, basis))
    scored.sort(key=lambda x: -x[0])
    out = list(links)
    used_i: set[int] = set()
    used_b: set[int] = set()
    for score, i, b, basis in scored:
        if i in used_i or b in used_b:
            continue
        # A tie for either side: no unique best, nothing proposed for it.
        if any(s == score and (j == i) != (c == b) for s, j, c, _ in scored if (j, c) != (i, b)):
            continue
        used_i.add(i)
        used_b.add(b)
        k = earlier[b]
        head = out[i][0][0]
        out[i] = (out[i][0], k, f"{PROPOSED}: " + ", ".join(basis), False)
        pairings.append(
            {
                "timepoint": t,
                "date": when.isoformat() if when else None,
                "lesion": head.tracking_identifier,
                "source": {
                    "sop_instance_uid": head.source.get("sop_instance_uid"),
                    "tracking_uid": head.tracking_uid,
                },
                "diameter_mm": number(_diameter(head)),
                "paired_with": k.id,
                "paired_label": k.label,
                "basis": basis,
                "status": "proposed",
            }
        )
    return out


def _lesion(
    lesion_id: str,
    cluster: Sequence[Observation],
    kind: LesionKind,
    status: LesionStatus | None,
    notes: list[str],
) -> Lesion:
    head = cluster[0]
    fragments: tuple[Decimal, ...] | None = None
    long_axis = head.long_axis_mm
    if len(cluster) > 1:
        values = [o.long_axis_mm for o in cluster]
        if all(v is not None for v in values):
            fragments = tuple(v for v in values if v is not None)
            long_axis = None
            notes.append(f"split lesion: {len(cluster)} fragments share one Tracking UID")
        else:
            notes.append(f"{len(cluster)} groups share one Tracking UID but not all have a long axis")
    return Lesion(
        id=lesion_id,
        organ=head.organ,
        kind=kind,
        status=status or _default_status(kind),
        is_node=head.is_node,
        long_axis_mm=long_axis,
        short_axis_mm=head.short_axis_mm,
        mean_hu=head.mean_hu,
        fragments_mm=fragments,
        phase=head.phase,
    )


def _default_status(kind: LesionKind) -> LesionStatus:
    return {
        LesionKind.TARGET: LesionStatus.MEASURED,
        LesionKind.NON_TARGET: LesionStatus.PRESENT,
        LesionKind.NEW: LesionStatus.UNEQUIVOCAL,
    }[kind]


def _infer_baseline_roles(
    pending: list[tuple[list[Observation], TrackedLesion]],
    lesions: list[TrackedLesion],
    known: list[_Known],
    ctx: StudyContext,
) -> None:
    """RECIST baseline selection for lesions whose role the SR does not state."""
    if not pending:
        return
    stated_targets = [
        tl.lesion
        for tl in lesions
        if tl.lesion.kind is LesionKind.TARGET and not any(tl is p for _, p in pending)
    ]
    per_organ: dict[str, int] = {}
    for lesion in stated_targets:
        per_organ[lesion.organ] = per_organ.get(lesion.organ, 0) + 1
    n_targets = len(stated_targets)
    measurable = [(c, tl) for c, tl in pending if _measurable(c[0], ctx.slice_thickness_mm)]
    measurable.sort(key=lambda pair: -(_diameter(pair[0][0]) or Decimal(0)))
    chosen: set[int] = set()
    for cluster, tl in measurable:
        organ = cluster[0].organ
        if n_targets < MAX_TARGETS and per_organ.get(organ, 0) < MAX_TARGETS_PER_ORGAN:
            chosen.add(id(tl))
            n_targets += 1
            per_organ[organ] = per_organ.get(organ, 0) + 1
    for cluster, tl in pending:
        head = cluster[0]
        d = _diameter(head)
        if id(tl) in chosen:
            kind = LesionKind.TARGET
            why = (
                f"role inferred: target (measurable, {'short' if head.is_node else 'long'} axis {d} mm; "
                f"largest first, at most {MAX_TARGETS} and {MAX_TARGETS_PER_ORGAN} per organ)"
            )
        else:
            kind = LesionKind.NON_TARGET
            if d is None:
                reason = "not measured"
            elif not _measurable(head, ctx.slice_thickness_mm):
                reason = f"not measurable ({d} mm)"
                if head.is_node and d < NODE_PATHOLOGICAL_MM:
                    reason += ", node below 10 mm short axis is normal"
            else:
                reason = "measurable but beyond 5 targets or 2 per organ"
            why = f"role inferred: non-target ({reason})"
        tl.notes.insert(0, why)
        old = tl.lesion
        tl.lesion = Lesion(
            id=old.id,
            organ=old.organ,
            kind=kind,
            status=_default_status(kind),
            is_node=old.is_node,
            long_axis_mm=old.long_axis_mm,
            short_axis_mm=old.short_axis_mm,
            mean_hu=old.mean_hu,
            fragments_mm=old.fragments_mm,
            phase=old.phase,
        )
        for k in known:
            if k.id == old.id:
                k.kind = kind


# --------------------------------------------------------------------------------------------------------
# JSON (DESIGN.md timeline schema + per-lesion source and per-file warnings)


def _lesion_dict(tl: TrackedLesion) -> dict[str, Any]:
    lesion = tl.lesion
    out: dict[str, Any] = {
        "id": lesion.id,
        "organ": lesion.organ,
        "kind": lesion.kind.value,
        "status": lesion.status.value,
        "is_node": lesion.is_node,
        "long_axis_mm": number(lesion.long_axis_mm),
        "short_axis_mm": number(lesion.short_axis_mm),
        "mean_hu": number(lesion.mean_hu),
    }
    if lesion.fragments_mm is not None:
        out["fragments_mm"] = [number(v) for v in lesion.fragments_mm]
    if lesion.phase is not None:
        out["phase"] = lesion.phase.value
    out["notes"] = tl.notes
    out["source"] = tl.sources[0] if len(tl.sources) == 1 else {"fragments": tl.sources}
    return out


def timeline_to_dict(
    tracked: TrackedTimeline, file_warnings: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The timeline JSON of DESIGN.md (``liver-agent assess`` reads it back), plus provenance."""
    ctx = tracked.context
    timepoints = []
    for tp in tracked.timepoints:
        t = tp.timepoint
        r = tp.report.report
        timepoints.append(
            {
                "date": t.date.isoformat(),
                "modality": t.modality,
                "phase": t.phase.value if t.phase else None,
                "slice_thickness_mm": number(t.slice_thickness_mm),
                "contrast": t.contrast,
                "lesions": [_lesion_dict(tl) for tl in tp.lesions],
                "study_instance_uid": tp.study_uid,
                "source": {
                    "file": r.source,
                    "sop_instance_uid": r.sop_instance_uid,
                    "sop_class": r.sop_class_name,
                    "reader": r.reader,
                    "facts_from": tp.report.context.facts_from,
                    "superseded": [
                        {"file": s.report.source, "sop_instance_uid": s.report.sop_instance_uid}
                        for s in tp.superseded
                    ],
                },
                "notes": tp.notes,
            }
        )
    return {
        "context": {
            "treatment_start": ctx.treatment_start.isoformat() if ctx.treatment_start else None,
            "primary": ctx.primary,
            "therapy": list(ctx.therapy),
            "criteria": [c.value for c in ctx.criteria],
        },
        "timepoints": timepoints,
        "provisional": tracked.provisional,
        "pairings": tracked.pairings,
        "tracking_alerts": [
            {"code": a.code, "timepoint": a.timepoint, "lesion": a.lesion_id, "message": a.message}
            for a in tracked.alerts
        ],
        "warnings": file_warnings or {},
    }
