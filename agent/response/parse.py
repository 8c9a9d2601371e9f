"""Edges of the clinical core: timeline JSON -> ``Timeline`` and ``Assessment`` -> Assessment JSON.

The input shape is that of a ``tests/data/criteria/vectors.json`` case (``context``, optional ``options``,
``timepoints``). An unknown key in a time point, a lesion or the options is an error naming it; other
top-level keys (a case's ``id`` or ``expected``) are ignored. Any invalid value raises ``ValidationError``
whose message starts with the path of the field, e.g. ``timepoints[2].lesions[0].long_axis_cm: unknown
key``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import cache
from typing import Any, TypeVar, cast

from agent.response.model import (
    STATUSES_BY_KIND,
    Alert,
    Ancillary,
    Assessment,
    Category,
    ChoiPdReference,
    ChunAttenuation,
    ChunInterface,
    ChunRim,
    Context,
    Criterion,
    CriterionResult,
    IntratumoralNodule,
    Lesion,
    LesionKind,
    LesionStatus,
    Marker,
    MarkerResult,
    NewCategory,
    Options,
    PetLesion,
    PetScan,
    Phase,
    PrPersistence,
    Threshold,
    Timeline,
    TimePoint,
    TimepointAssessment,
    is_node_organ,
)
from agent.response.sites import SiteTargets

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")


class ValidationError(ValueError):
    """Invalid timeline input; ``str(exc)`` is ``"<field path>: <problem>"``."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


_CRITERION_ALIASES: dict[str, Criterion] = {c.value.lower(): c for c in Criterion}
_CRITERION_ALIASES.update(
    {"recist": Criterion.RECIST, "recist 1.1": Criterion.RECIST, "recist11": Criterion.RECIST}
)
_CRITERION_ALIASES.update({c.key: c for c in Criterion})


def criterion_from_name(name: str, path: str = "criteria") -> Criterion:
    """``RECIST1.1`` / ``recist`` / ``iRECIST`` ... -> ``Criterion`` (case-insensitive)."""
    found = _CRITERION_ALIASES.get(name.strip().lower())
    if found is None:
        raise ValidationError(
            path, f"unknown criterion {name!r} (one of {', '.join(c.value for c in Criterion)})"
        )
    return found


# --------------------------------------------------------------------------------------------------------
# Scalars


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(path, "must be an object")
    return value


def _list(value: object, path: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise ValidationError(path, "must be a list")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(path, "must be a non-empty string")
    return value.strip()


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(path, "must be true or false")
    return value


def _int(value: object, path: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValidationError(path, "must be an integer")
    if isinstance(value, Decimal) and value != value.to_integral_value():
        raise ValidationError(path, "must be an integer")
    if value < minimum:
        raise ValidationError(path, f"must be >= {minimum}")
    return int(value)


def _decimal(value: object, path: str, minimum: Decimal | None = Decimal(0)) -> Decimal:
    if isinstance(value, bool):
        raise ValidationError(path, "must be a number")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))  # the shortest repr: 23.1 stays 23.1
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValidationError(path, "must be a number") from None
    else:
        raise ValidationError(path, "must be a number")
    if not result.is_finite():
        raise ValidationError(path, "must be a finite number")
    if minimum is not None and result < minimum:
        raise ValidationError(path, f"must be >= {minimum}")
    return result


def _date(value: object, path: str) -> date:
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValidationError(path, "must be an ISO date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ValidationError(path, "must be an ISO date (YYYY-MM-DD)") from None


#: Other accepted spellings of enum values (docs/criteria.md §7.1: Chun's "homogeneous and hypoattenuating").
_ALIASES: dict[str, str] = {
    "homogeneous": "homogeneous_hypoattenuating",
    "homogeneous_and_hypoattenuating": "homogeneous_hypoattenuating",
}


def _enum(cls: type[E], value: object, path: str, allowed: Sequence[E] | None = None) -> E:
    choices = tuple(allowed) if allowed is not None else tuple(cls)
    if isinstance(value, str):
        norm = value.strip().lower().replace("-", "_").replace(" ", "_")
        member = _spellings(choices).get(norm) or _spellings(choices).get(_ALIASES.get(norm, ""))
        if member is not None:
            return cast(E, member)
    raise ValidationError(path, f"must be one of {', '.join(m.value for m in choices)}")


@cache
def _spellings(choices: tuple[StrEnum, ...]) -> dict[str, StrEnum]:
    """Accepted spellings (value with ``-`` as ``_``, or name; lower case) -> member; the first of ``choices``
    wins when two members share a spelling."""
    out: dict[str, StrEnum] = {}
    for member in choices:
        out.setdefault(member.value.lower().replace("-", "_"), member)
        out.setdefault(member.name.lower(), member)
    return out


def _opt(data: Mapping[str, Any], key: str, path: str, conv: Callable[[object, str], T]) -> T | None:
    value = data.get(key)
    return None if value is None else conv(value, f"{path}.{key}")


# --------------------------------------------------------------------------------------------------------
# Timeline


def _context(data: Mapping[str, Any]) -> Context:
    path = "context"
    _known_keys(data, CONTEXT_KEYS, path)  # a misspelt treatment_start would silently move the baseline
    start = _opt(data, "treatment_start", path, _date)
    primary = _opt(data, "primary", path, _str) or "unknown"
    therapy_raw = data.get("therapy") or []
    if isinstance(therapy_raw, str):
        therapy_raw = [therapy_raw]
    therapy = tuple(
        _str(v, f"{path}.therapy[{i}]") for i, v in enumerate(_list(therapy_raw, f"{path}.therapy"))
    )
    criteria_raw = data.get("criteria")
    if criteria_raw is None:
        criteria: tuple[Criterion, ...] = (Criterion.RECIST,)
    else:
        items = _list(criteria_raw, f"{path}.criteria")
        criteria = tuple(
            dict.fromkeys(
                criterion_from_name(_str(v, f"{path}.criteria[{i}]"), f"{path}.criteria[{i}]")
                for i, v in enumerate(items)
            )
        )
    return Context(treatment_start=start, primary=primary, therapy=therapy, criteria=criteria)


def _options(data: Mapping[str, Any]) -> Options:
    path = "options"
    kw: dict[str, Any] = {}
    if (v := data.get("pr_persistence")) is not None:
        kw["pr_persistence"] = _enum(PrPersistence, v, f"{path}.pr_persistence")
    if (v := data.get("confirmation_required")) is not None:
        kw["confirmation_required"] = _bool(v, f"{path}.confirmation_required")
    if (v := data.get("min_sd_days")) is not None:
        kw["min_sd_days"] = _int(v, f"{path}.min_sd_days")
    if (v := data.get("choi_pd_reference")) is not None:
        kw["choi_pd_reference"] = _enum(ChoiPdReference, v, f"{path}.choi_pd_reference")
    if (v := data.get("choi_density_phase")) is not None:
        kw["choi_density_phase"] = _enum(Phase, v, f"{path}.choi_density_phase")
    if (v := data.get("choi_assume_unknown_phase")) is not None:
        kw["choi_assume_unknown_phase"] = _bool(v, f"{path}.choi_assume_unknown_phase")
    if (v := data.get("mrecist_require_5mm")) is not None:
        kw["mrecist_require_5mm"] = _bool(v, f"{path}.mrecist_require_5mm")
    if (v := data.get("max_interval_days")) is not None:
        kw["max_interval_days"] = _int(v, f"{path}.max_interval_days", minimum=1)
    if (v := data.get("borderline_pp")) is not None:
        kw["borderline_pp"] = _decimal(v, f"{path}.borderline_pp")
    if (v := data.get("borderline_mm")) is not None:
        kw["borderline_mm"] = _decimal(v, f"{path}.borderline_mm")
    if (v := data.get("baseline_window_days")) is not None:
        kw["baseline_window_days"] = _int(v, f"{path}.baseline_window_days")
    if (v := data.get("plausible_min_mm")) is not None:
        kw["plausible_min_mm"] = _decimal(v, f"{path}.plausible_min_mm")
    if (v := data.get("plausible_max_mm")) is not None:
        kw["plausible_max_mm"] = _decimal(v, f"{path}.plausible_max_mm")
    if (v := data.get("marker_window_days")) is not None:
        kw["marker_window_days"] = _int(v, f"{path}.marker_window_days")
    if (v := data.get("marker_after_days")) is not None:
        kw["marker_after_days"] = _int(v, f"{path}.marker_after_days")
    if (v := data.get("pet_window_days")) is not None:
        kw["pet_window_days"] = _int(v, f"{path}.pet_window_days")
    defaults = Options()
    low = kw.get("plausible_min_mm", defaults.plausible_min_mm)
    if kw.get("plausible_max_mm", defaults.plausible_max_mm) <= low:
        raise ValidationError(f"{path}.plausible_max_mm", "must be above plausible_min_mm")
    _known_keys(data, OPTION_KEYS, path)
    return Options(**kw)


#: Provenance the SR timeline JSON carries beside the measurements (read back, not used by the criteria).
PROVENANCE_KEYS = frozenset({"source", "notes", "study_instance_uid"})
LESION_KEYS = frozenset(Lesion.__dataclass_fields__) | PROVENANCE_KEYS
TIMEPOINT_KEYS = frozenset(TimePoint.__dataclass_fields__) | PROVENANCE_KEYS
OPTION_KEYS = frozenset(Options.__dataclass_fields__)
CONTEXT_KEYS = frozenset(Context.__dataclass_fields__)


def _known_keys(data: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    """An unknown key is an input error naming it (a misspelt or unit-suffixed field is never dropped)."""
    for key in data:
        if key not in allowed:
            raise ValidationError(f"{path}.{key}", "unknown key")


def _diameter(value: object, path: str) -> Decimal:
    """A diameter: any finite number here; the core judges whether it is plausible (docs/criteria.md §1.8)."""
    return _decimal(value, path, minimum=None)


def _lesion(data: Mapping[str, Any], path: str) -> Lesion:
    _known_keys(data, LESION_KEYS, path)
    lesion_id = _str(str(data["id"]) if isinstance(data.get("id"), int) else data.get("id"), f"{path}.id")
    organ = _str(data.get("organ"), f"{path}.organ").lower()
    if is_node_organ(organ):
        organ = "lymph_node"
    kind = _enum(LesionKind, data.get("kind"), f"{path}.kind")
    allowed = STATUSES_BY_KIND[kind]
    status_raw = data.get("status")
    status = allowed[0] if status_raw is None else _enum(LesionStatus, status_raw, f"{path}.status", allowed)
    is_node_raw = data.get("is_node")
    is_node = organ == "lymph_node" if is_node_raw is None else _bool(is_node_raw, f"{path}.is_node")
    fragments: tuple[Decimal, ...] | None = None
    if (frag := data.get("fragments_mm")) is not None:
        items = _list(frag, f"{path}.fragments_mm")
        if not items:
            raise ValidationError(f"{path}.fragments_mm", "must not be empty")
        fragments = tuple(_diameter(v, f"{path}.fragments_mm[{i}]") for i, v in enumerate(items))
    chun_group = _opt(data, "chun_group", path, _int)
    if chun_group is not None and chun_group not in (1, 2, 3):
        raise ValidationError(f"{path}.chun_group", "must be 1, 2 or 3")
    ancillary_raw = data.get("ancillary") or []
    if isinstance(ancillary_raw, str):
        ancillary_raw = [ancillary_raw]
    ancillary = frozenset(
        _enum(Ancillary, v, f"{path}.ancillary[{i}]")
        for i, v in enumerate(_list(ancillary_raw, f"{path}.ancillary"))
    )
    nodule = data.get("intratumoral_nodule")
    return Lesion(
        id=lesion_id,
        organ=organ,
        kind=kind,
        status=status,
        is_node=is_node,
        long_axis_mm=_opt(data, "long_axis_mm", path, _diameter),
        short_axis_mm=_opt(data, "short_axis_mm", path, _diameter),
        mean_hu=_opt(data, "mean_hu", path, lambda v, p: _decimal(v, p, minimum=None)),
        fragments_mm=fragments,
        merged_into=_opt(data, "merged_into", path, lambda v, p: _str(str(v), p)),
        phase=_opt(data, "phase", path, lambda v, p: _enum(Phase, v, p)),
        increased_since_prior=bool(_opt(data, "increased_since_prior", path, _bool)),
        new_category=_opt(data, "new_category", path, lambda v, p: _enum(NewCategory, v, p)),
        prior_visible=bool(_opt(data, "prior_visible", path, _bool)),
        intratumoral_nodule=IntratumoralNodule.NONE
        if nodule is None
        else _enum(IntratumoralNodule, nodule, f"{path}.intratumoral_nodule"),
        viable_long_axis_mm=_opt(data, "viable_long_axis_mm", path, _diameter),
        viable_perp_axis_mm=_opt(data, "viable_perp_axis_mm", path, _diameter),
        chun_group=chun_group,
        chun_attenuation=_opt(data, "chun_attenuation", path, lambda v, p: _enum(ChunAttenuation, v, p)),
        chun_interface=_opt(data, "chun_interface", path, lambda v, p: _enum(ChunInterface, v, p)),
        chun_rim=_opt(data, "chun_rim", path, lambda v, p: _enum(ChunRim, v, p)),
        ancillary=ancillary,
        locally_treated=bool(_opt(data, "locally_treated", path, _bool)),
    )


def _timepoint(data: Mapping[str, Any], path: str) -> TimePoint:
    _known_keys(data, TIMEPOINT_KEYS, path)
    lesions_raw = data.get("lesions")
    lesions_list = [] if lesions_raw is None else _list(lesions_raw, f"{path}.lesions")
    lesions = tuple(
        _lesion(_mapping(v, f"{path}.lesions[{i}]"), f"{path}.lesions[{i}]")
        for i, v in enumerate(lesions_list)
    )
    seen: set[str] = set()
    for i, lesion in enumerate(lesions):
        if lesion.id in seen:
            raise ValidationError(
                f"{path}.lesions[{i}].id", f"duplicate lesion id {lesion.id!r} at this time point"
            )
        seen.add(lesion.id)
    modality = _opt(data, "modality", path, _str)
    return TimePoint(
        date=_date(data.get("date"), f"{path}.date"),
        modality=modality.upper() if modality is not None else None,
        phase=_opt(data, "phase", path, lambda v, p: _enum(Phase, v, p)),
        slice_thickness_mm=_opt(data, "slice_thickness_mm", path, _decimal),
        contrast=_opt(data, "contrast", path, _bool),
        unscheduled_for_symptoms=bool(_opt(data, "unscheduled_for_symptoms", path, _bool)),
        lesions=lesions,
        label=_opt(data, "label", path, _str),
    )


MARKER_KEYS = frozenset(MarkerResult.__dataclass_fields__) | frozenset({"source"})

#: Spellings of the tumour markers (lower case, without spaces, dashes or dots).
_MARKER_NAMES: dict[str, Marker] = {
    "cea": Marker.CEA,
    "carcinoembryonicantigen": Marker.CEA,
    "ca199": Marker.CA19_9,
    "ca153": Marker.CA15_3,
    "ca125": Marker.CA125,
    "afp": Marker.AFP,
    "alphafetoprotein": Marker.AFP,
    "chromogranina": Marker.CHROMOGRANIN_A,
    "cga": Marker.CHROMOGRANIN_A,
}


def marker_from_name(name: object, path: str = "marker") -> Marker:
    """``CEA`` / ``CA 19-9`` / ``CA19.9`` / ``chromogranin A`` ... -> ``Marker``."""
    text = _str(name, path)
    key = text.lower()
    for sep in (" ", "-", "_", ".", "/"):
        key = key.replace(sep, "")
    found = _MARKER_NAMES.get(key)
    if found is None:
        raise ValidationError(
            path, f"unknown tumour marker {text!r} (one of {', '.join(m.value for m in Marker)})"
        )
    return found


def marker_from_dict(data: Mapping[str, Any], path: str) -> MarkerResult:
    """One tumour marker result (docs/criteria.md §13.2): ``marker``, ``date``, ``value``, ``unit`` and the
    optional reference range ``lower_limit`` / ``upper_limit``."""
    _known_keys(data, MARKER_KEYS, path)
    low = _opt(data, "lower_limit", path, _decimal)
    high = _opt(data, "upper_limit", path, _decimal)
    if low is not None and high is not None and high < low:
        raise ValidationError(f"{path}.upper_limit", "must not be below lower_limit")
    return MarkerResult(
        marker=marker_from_name(data.get("marker"), f"{path}.marker"),
        date=_date(data.get("date"), f"{path}.date"),
        value=_decimal(data.get("value"), f"{path}.value"),
        unit=_str(data.get("unit"), f"{path}.unit"),
        lower_limit=low,
        upper_limit=high,
    )


PET_KEYS = frozenset(PetScan.__dataclass_fields__) | PROVENANCE_KEYS
PET_LESION_KEYS = frozenset(PetLesion.__dataclass_fields__) | PROVENANCE_KEYS


def pet_from_dict(data: Mapping[str, Any], path: str) -> PetScan:
    """One FDG PET/CT examination (docs/criteria.md §13.3): ``date``, ``lesions`` (``id``, ``organ``,
    ``suv_max``, ``suv_peak``, ``sul_peak``, ``sul_max``, ``volume_ml``, ``absent``), ``liver_sul_mean``,
    ``new_lesions``."""
    _known_keys(data, PET_KEYS, path)
    lesions: list[PetLesion] = []
    seen: set[str] = set()
    for i, raw in enumerate(_list(data.get("lesions") or [], f"{path}.lesions")):
        p = f"{path}.lesions[{i}]"
        item = _mapping(raw, p)
        _known_keys(item, PET_LESION_KEYS, p)
        lesion_id = _str(str(item["id"]) if isinstance(item.get("id"), int) else item.get("id"), f"{p}.id")
        if lesion_id in seen:
            raise ValidationError(f"{p}.id", f"duplicate lesion id {lesion_id!r} at this PET")
        seen.add(lesion_id)
        lesions.append(
            PetLesion(
                id=lesion_id,
                organ=(_opt(item, "organ", p, _str) or "unknown").lower(),
                suv_max=_opt(item, "suv_max", p, _decimal),
                suv_peak=_opt(item, "suv_peak", p, _decimal),
                sul_peak=_opt(item, "sul_peak", p, _decimal),
                sul_max=_opt(item, "sul_max", p, _decimal),
                volume_ml=_opt(item, "volume_ml", p, _decimal),
                absent=bool(_opt(item, "absent", p, _bool)),
            )
        )
    new = tuple(
        _str(v, f"{path}.new_lesions[{i}]")
        for i, v in enumerate(_list(data.get("new_lesions") or [], f"{path}.new_lesions"))
    )
    return PetScan(
        date=_date(data.get("date"), f"{path}.date"),
        lesions=tuple(lesions),
        liver_sul_mean=_opt(data, "liver_sul_mean", path, _decimal),
        new_lesions=new,
    )


def timeline_from_dict(data: object) -> Timeline:
    """Validate a timeline object (vectors.json case shape) and build the model; other keys are ignored."""
    root = _mapping(data, "$")
    context = _context(_mapping(root.get("context"), "context"))
    options_raw = root.get("options")
    options = Options() if options_raw is None else _options(_mapping(options_raw, "options"))
    tps_raw = _list(root.get("timepoints"), "timepoints")
    if not tps_raw:
        raise ValidationError("timepoints", "must hold at least the baseline")
    timepoints = tuple(
        _timepoint(_mapping(v, f"timepoints[{i}]"), f"timepoints[{i}]") for i, v in enumerate(tps_raw)
    )
    for i in range(1, len(timepoints)):
        if timepoints[i].date < timepoints[i - 1].date:
            raise ValidationError(f"timepoints[{i}].date", "must not be earlier than the previous time point")
    markers_raw = root.get("markers")
    markers_list = [] if markers_raw is None else _list(markers_raw, "markers")
    markers = tuple(
        sorted(
            (
                marker_from_dict(_mapping(v, f"markers[{i}]"), f"markers[{i}]")
                for i, v in enumerate(markers_list)
            ),
            key=lambda r: r.date,
        )
    )
    pet_raw = root.get("pet")
    pet = tuple(
        sorted(
            (
                pet_from_dict(_mapping(v, f"pet[{i}]"), f"pet[{i}]")
                for i, v in enumerate([] if pet_raw is None else _list(pet_raw, "pet"))
            ),
            key=lambda scan: scan.date,
        )
    )
    return Timeline(context=context, timepoints=timepoints, options=options, markers=markers, pet=pet)


def apply_options(timeline: Timeline, overrides: Mapping[str, object]) -> Timeline:
    """A copy of ``timeline`` with some options replaced (``{"choi_pd_reference": "baseline"}``)."""
    merged: dict[str, object] = {f: getattr(timeline.options, f) for f in Options.__dataclass_fields__}
    merged = {k: (v.value if isinstance(v, StrEnum) else v) for k, v in merged.items()}
    merged.update(overrides)
    return Timeline(
        context=timeline.context,
        timepoints=timeline.timepoints,
        options=_options(merged),
        markers=timeline.markers,
    )


# --------------------------------------------------------------------------------------------------------
# Assessment JSON


def number(value: Decimal | None) -> int | float | None:
    """A Decimal for JSON: an int when integral, else the float of its decimal text."""
    if value is None:
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _code(category: Category | None) -> str | None:
    return None if category is None else category.value


def _threshold(t: Threshold) -> dict[str, Any]:
    return {
        "category": t.category.value,
        "comparison": t.comparison,
        "value": number(t.value),
        "quantity": t.quantity,
        "rule": t.rule,
    }


def _pct1(value: Decimal | None) -> float | None:
    """A percentage for display: one decimal."""
    return None if value is None else float(value.quantize(Decimal("0.1")))


def _mean(value: Decimal | None) -> int | float | None:
    return None if value is None else number(value.quantize(Decimal("0.1")).normalize())


def explanation(
    step: TimepointAssessment, assessment: Assessment | None, baseline_sum: Decimal | None
) -> dict[str, Any]:
    """Why a follow-up got its category (docs/criteria.md §1.7): rule and citation, the baseline and the
    reference compared with, the sums and changes, densities, per-lesion figures, iRECIST state."""
    labels = assessment.labels if assessment is not None else ()
    dates = assessment.dates if assessment is not None else ()
    b = assessment.baseline_index if assessment is not None else 0
    out: dict[str, Any] = {
        "label": labels[step.index] if step.index < len(labels) else None,
        "date": step.date.isoformat(),
        "category": step.category.value,
        "rule": step.rule,
        "citation": step.citation,
        "baseline": {
            "label": labels[b] if b < len(labels) else None,
            "date": dates[b].isoformat() if b < len(dates) else None,
            "sum_mm": number(step.baseline_sum_mm if step.baseline_sum_mm is not None else baseline_sum),
        },
        "reference": None,
        "sum_mm": number(step.sum_mm),
        "partial_sum_mm": number(step.partial_sum_mm),
        "change_vs_baseline_pct": _pct1(step.change_vs_baseline_pct),
        "change_vs_reference_pct": _pct1(step.change_vs_nadir_pct),
        "ne_reason": step.ne_reason,
        "notes": list(step.notes),
    }
    if step.reference is not None:
        out["reference"] = {
            "kind": step.reference,
            "label": step.reference_label,
            "date": step.reference_date.isoformat() if step.reference_date else None,
            "sum_mm": number(step.nadir_sum_mm),
        }
    if step.density_hu is not None or step.density_baseline_hu is not None:
        out["density"] = {
            "mean_hu": _mean(step.density_hu),
            "baseline_mean_hu": _mean(step.density_baseline_hu),
            "change_pct": _pct1(step.change_density_pct),
        }
    if step.lesions:
        out["lesions"] = [
            {
                "id": d.lesion_id,
                "quantity": d.quantity,
                "baseline": number(d.baseline),
                "current": number(d.current),
                "result": d.result,
                "used": d.used,
            }
            for d in step.lesions
        ]
    if step.state is not None:
        out["state"] = step.state
        out["next_step"] = step.next_step
    return out


def criterion_to_dict(result: CriterionResult, assessment: Assessment | None = None) -> dict[str, Any]:
    tps = result.timepoints
    b = assessment.baseline_index if assessment is not None else 0
    out: dict[str, Any] = {
        "timepoint_responses": [_code(tp.category) if tp else None for tp in tps],
        "target_responses": [_code(tp.target) if tp else None for tp in tps],
        "non_target_responses": [_code(tp.non_target) if tp else None for tp in tps],
        "target_sums_mm": [
            number(result.baseline_sum_mm) if i == b else number(tp.sum_mm) if tp else None
            for i, tp in enumerate(tps)
        ],
        "bor": result.bor.value,
    }
    if result.criterion is Criterion.RECIST:
        out["provisional_timepoint_responses"] = [
            _code(tp.provisional_category or tp.category) if tp else None for tp in tps
        ]
        out["next_thresholds"] = [_threshold(t) for t in result.next_thresholds]
    elif result.next_thresholds:
        out["next_thresholds"] = [_threshold(t) for t in result.next_thresholds]
    out["nadir_sums_mm"] = [number(tp.nadir_sum_mm) if tp else None for tp in tps]
    out["change_vs_baseline_pct"] = [number(tp.change_vs_baseline_pct) if tp else None for tp in tps]
    out["change_vs_nadir_pct"] = [number(tp.change_vs_nadir_pct) if tp else None for tp in tps]
    out["ne_reasons"] = [tp.ne_reason if tp else None for tp in tps]
    out["rules"] = [tp.rule if tp else None for tp in tps]
    out["bor_rule"] = result.bor_rule
    out["pd_date"] = result.pd_date.isoformat() if result.pd_date else None
    out["timepoint_roles"] = [
        "history" if i < b else "baseline" if i == b else "follow-up" for i in range(len(tps))
    ]
    out["explanations"] = [
        explanation(tp, assessment, result.baseline_sum_mm) if tp is not None else None for tp in tps
    ]
    out["notes"] = list(result.notes)
    return out


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    return {
        "code": alert.code,
        "timepoint": alert.timepoint,
        "severity": alert.severity.value,
        "message": alert.message,
        "citation": alert.citation,
    }


def _site_targets(entry: SiteTargets, labels: Sequence[str]) -> dict[str, Any]:
    return {
        "lesions": list(entry.lesion_ids),
        "sum_mm": number(entry.sum_mm),
        "partial_sum_mm": number(entry.partial_sum_mm),
        "baseline_sum_mm": number(entry.baseline_sum_mm),
        "nadir_sum_mm": number(entry.nadir_sum_mm),
        "nadir_label": labels[entry.nadir_index]
        if entry.nadir_index is not None and entry.nadir_index < len(labels)
        else None,
        "change_vs_baseline_pct": _pct1(entry.change_vs_baseline_pct),
        "change_vs_nadir_pct": _pct1(entry.change_vs_nadir_pct),
        "category": None if entry.category is Category.NONE else entry.category.value,
        "rule": entry.rule or None,
    }


def sites_to_dict(assessment: Assessment) -> list[dict[str, Any] | None]:
    """The response split by site (docs/criteria.md §13.1), one entry per time point (``None`` before the
    baseline): each site's target figures, each site's status at a follow-up and non-targets by organ."""
    labels = assessment.labels
    out: list[dict[str, Any] | None] = []
    for split_t in assessment.sites:
        if split_t is None:
            out.append(None)
            continue
        out.append(
            {
                "targets": {e.site: _site_targets(e, labels) for e in split_t.targets},
                "sites": {
                    s.site: {
                        "category": s.category.value,
                        "rule": s.rule,
                        "non_target": None if s.non_target is Category.NONE else s.non_target.value,
                        "new_lesions": list(s.new_lesions),
                    }
                    for s in split_t.sites
                },
                "non_targets_by_organ": {
                    nt.organ: {
                        "lesions": list(nt.lesion_ids),
                        "category": None if nt.category is Category.NONE else nt.category.value,
                    }
                    for nt in split_t.non_targets
                },
                "not_assessed": split_t.not_assessed,
            }
        )
    return out


def site_lines(split: Mapping[str, Any] | None) -> list[str]:
    """One time point of ``sites_to_dict`` as sentences (the SR, the PDF and the worklist say the same)."""
    if not split:
        return []
    lines: list[str] = []
    names = {"liver": "Liver", "extrahepatic": "Extrahepatic"}
    statuses = split.get("sites") or {}
    for site, entry in (split.get("targets") or {}).items():
        text = f"{names.get(site, site)} targets {_num_text(entry.get('sum_mm'), ' mm')}"
        if entry.get("category"):
            nadir = entry.get("nadir_label") or "baseline"
            base = _num_text(entry.get("baseline_sum_mm"), " mm")
            low = _num_text(entry.get("nadir_sum_mm"), " mm")
            text += (
                f": {_pct_text(entry.get('change_vs_baseline_pct'))} vs baseline {base}, "
                f"{_pct_text(entry.get('change_vs_nadir_pct'))} vs nadir {low} ({nadir}); {entry['category']}"
            )
        lines.append(text + ".")
    for site, status in statuses.items():
        extra = f", new {', '.join(status['new_lesions'])}" if status.get("new_lesions") else ""
        lines.append(f"{names.get(site, site)} disease overall {status['category']}{extra}.")
    organs = split.get("non_targets_by_organ") or {}
    parts = [f"{organ} {entry['category']}" for organ, entry in organs.items() if entry.get("category")]
    if parts:
        lines.append("Non-targets by organ: " + "; ".join(parts) + ".")
    return lines


def markers_to_dict(assessment: Assessment) -> list[dict[str, Any]]:
    """Every tumour marker series (docs/criteria.md §13.2): its results and its status at each time point."""
    out: list[dict[str, Any]] = []
    for series in assessment.markers:
        out.append(
            {
                "marker": series.marker.value,
                "unit": series.unit,
                "results": [
                    {
                        "date": r.date.isoformat(),
                        "value": number(r.value),
                        "unit": r.unit,
                        "lower_limit": number(r.lower_limit),
                        "upper_limit": number(r.upper_limit),
                    }
                    for r in series.results
                ],
                "statuses": [
                    None
                    if s is None
                    else {
                        "category": s.category.value,
                        "rule": s.rule,
                        "citation": s.citation,
                        "value": number(s.value),
                        "date": s.date.isoformat() if s.date else None,
                        "pretreatment": number(s.pretreatment),
                        "pretreatment_date": s.pretreatment_date.isoformat() if s.pretreatment_date else None,
                        "nadir": number(s.nadir),
                        "nadir_date": s.nadir_date.isoformat() if s.nadir_date else None,
                        "upper_limit": number(s.upper_limit),
                        "change_vs_pretreatment_pct": _pct1(s.change_vs_pretreatment_pct),
                        "change_vs_nadir_pct": _pct1(s.change_vs_nadir_pct),
                    }
                    for s in series.statuses
                ],
            }
        )
    return out


def metabolic_to_dict(assessment: Assessment) -> list[dict[str, Any]]:
    """The metabolic response of each follow-up PET (docs/criteria.md §13.3)."""
    return [
        {
            "date": r.date.isoformat(),
            "baseline_date": r.baseline_date.isoformat(),
            "method": r.method,
            "category": r.category.value,
            "rule": r.rule,
            "citation": r.citation,
            "quantity": r.quantity,
            "baseline_value": number(r.baseline_value),
            "current_value": number(r.current_value),
            "change_pct": _pct1(r.change_pct),
            "fallback": r.fallback,
        }
        for r in assessment.metabolic
    ]


def marker_lines(markers: Sequence[Mapping[str, Any]], timepoint: int | None) -> list[str]:
    """Each marker's status at one time point as a sentence (SR, PDF and study page)."""
    lines = []
    for series in markers:
        statuses = series.get("statuses") or []
        status = statuses[timepoint] if timepoint is not None and 0 <= timepoint < len(statuses) else None
        if not status:
            continue
        lines.append(
            f"{series.get('marker')}: {str(status.get('category')).replace('_', ' ')} ({status.get('rule')})."
        )
    return lines


def assessment_to_dict(assessment: Assessment) -> dict[str, Any]:
    """The Assessment JSON of DESIGN.md (a key per criterion computed, ``sites``, then ``alerts``)."""
    out: dict[str, Any] = {r.criterion.key: criterion_to_dict(r, assessment) for r in assessment.results}
    if assessment.sites:
        out["sites"] = sites_to_dict(assessment)
    if assessment.markers:
        out["markers"] = markers_to_dict(assessment)
    if assessment.metabolic:
        out["metabolic"] = metabolic_to_dict(assessment)
    out["alerts"] = [alert_to_dict(a) for a in assessment.alerts]
    return out


def _num_text(value: object, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text}{unit}"


def _pct_text(value: object) -> str:
    return "n/a" if value is None else f"{float(value):+.1f} %"  # type: ignore[arg-type]


def _where(block: Mapping[str, Any]) -> str:
    label, when = block.get("label"), block.get("date")
    return " ".join(str(p) for p in (label, f"({when})" if when else None) if p)


def explanation_lines(explained: Mapping[str, Any]) -> list[str]:
    """A follow-up's explanation (an ``explanations`` entry of the Assessment JSON) as sentences, the same
    words for the response SR, the PDF summary and the worklist (docs/criteria.md §1.7)."""
    lines = [f"Rule: {explained.get('rule') or 'n/a'} ({explained.get('citation') or 'no citation'})."]
    baseline = explained.get("baseline") or {}
    reference = explained.get("reference")
    compared = f"baseline {_num_text(baseline.get('sum_mm'), ' mm')} at {_where(baseline)}"
    if reference and reference.get("kind") == "nadir":
        compared += f"; nadir {_num_text(reference.get('sum_mm'), ' mm')} at {_where(reference)}"
    if reference or baseline.get("sum_mm") is not None:
        lines.append(f"Compared with {compared}.")
    if explained.get("sum_mm") is not None:
        kind = reference.get("kind") if reference else "reference"
        vs_baseline = _pct_text(explained.get("change_vs_baseline_pct"))
        vs_reference = _pct_text(explained.get("change_vs_reference_pct"))
        total = _num_text(explained["sum_mm"], " mm")
        lines.append(f"Sum {total}: {vs_baseline} vs baseline, {vs_reference} vs {kind}.")
    elif explained.get("partial_sum_mm") is not None:
        lines.append(f"Partial sum {_num_text(explained['partial_sum_mm'], ' mm')} (a target not assessed).")
    density = explained.get("density")
    if density:
        lines.append(
            f"Mean density {_num_text(density.get('mean_hu'), ' HU')} vs "
            f"{_num_text(density.get('baseline_mean_hu'), ' HU')} at baseline "
            f"({_pct_text(density.get('change_pct'))})."
        )
    lesions = explained.get("lesions") or []
    if lesions:
        parts = []
        for les in lesions:
            if les.get("quantity") == "chun_group":
                before = f"G{les['baseline']}" if les.get("baseline") is not None else "G?"
                after = f"G{les['current']}" if les.get("current") is not None else "gone"
                parts.append(f"{les['id']} {before} -> {after} {les.get('result') or ''}".rstrip())
            else:
                text = f"{les['id']} {_num_text(les.get('baseline'))} -> {_num_text(les.get('current'))} HU"
                parts.append(text if les.get("used") else f"{text} (left out: {les.get('result')})")
        lines.append("Per lesion: " + "; ".join(parts) + ".")
    if explained.get("state"):
        lines.append(f"State: {explained['state']}.")
    if explained.get("next_step"):
        lines.append(f"Next: {explained['next_step']}.")
    if explained.get("ne_reason"):
        lines.append(f"Not evaluable: {explained['ne_reason']}.")
    lines.extend(f"Note: {note}." for note in explained.get("notes") or [])
    return lines
