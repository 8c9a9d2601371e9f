"""Measurement groups -> lesion observations of one SR (before identities are linked across studies).

An :class:`Observation` holds what a group says about one lesion at one time point, in the units and words of
the response model (docs/criteria.md §1.2): organ, node or not, long/short axis, mean HU, the role and status
when the SR states them (Baseline Category, our private role/status codes), and a ``source`` record naming the
file, SOP Instance UID, tracking identifier/UID and the concept codes each value came from. Roles the SR does
not state are inferred later, across the whole timeline, by ``agent.pipeline.tracking``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from agent.response.model import STATUSES_BY_KIND, LesionKind, LesionStatus, Phase
from agent.sr import codes, density, geometry
from agent.sr.codes import Code, matches
from agent.sr.context import DEFAULT_PHASE_RULES, PhaseRule, SeriesLookup, image_context
from agent.sr.read import Measurement, MeasurementGroup, MeasurementKind, Region, SRReport, is_lesion_group


def label_key(text: str) -> str:
    """A label as compared across studies: case, spacing and punctuation do not matter, the words do
    ("Target 1" and "target  1." match; "T1" and "Target 1" do not)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", folded).split())


@dataclass(frozen=True, slots=True)
class Observation:
    """One lesion as one SR reports it."""

    tracking_uid: str | None
    tracking_identifier: (
        str | None
    )  # the lesion's name: viewer label or Tracking Identifier, never a tool name
    organ: str
    is_node: bool
    long_axis_mm: Decimal | None
    short_axis_mm: Decimal | None
    mean_hu: Decimal | None
    kind: LesionKind | None  # stated by the SR; None = to be inferred
    status: LesionStatus | None
    phase: Phase | None
    site_codes: tuple[Code, ...]
    location: tuple[float, ...] | None  # SCOORD3D centre in patient coordinates (mm), if any
    area_mm2: Decimal | None = None
    volume_mm3: Decimal | None = None
    notes: tuple[str, ...] = ()
    source: dict[str, object] = field(default_factory=dict, compare=False, hash=False)


def observations(
    report: SRReport,
    lookup: SeriesLookup | None = None,
    rules: Sequence[PhaseRule] = DEFAULT_PHASE_RULES,
) -> tuple[list[Observation], list[str]]:
    """The lesion observations of ``report`` and warnings about the groups that were not used."""
    out: list[Observation] = []
    warns: list[str] = []
    for group in report.groups:
        if matches(group.finding, codes.TARGET_SUM_FINDING):
            continue  # our response report's sum of diameters: not a lesion, nothing to warn about
        if not is_lesion_group(group):
            warns.append(f"group {group.label!r} is not a lesion measurement; not used")
            continue
        baseline_category = group.evaluation(codes.BASELINE_CATEGORY)
        if baseline_category and matches(baseline_category.code, codes.NON_LESION_AT_BASELINE):
            warns.append(f"group {group.label!r} is a non-lesion at baseline; not used")
            continue
        out.append(_observation(report, group, lookup, rules))
    return out, warns


def _observation(
    report: SRReport, group: MeasurementGroup, lookup: SeriesLookup | None, rules: Sequence[PhaseRule]
) -> Observation:
    notes: list[str] = []
    used: list[Measurement] = []
    long_m = group.first(MeasurementKind.LONG_AXIS)
    if long_m is None and (long_m := group.first(MeasurementKind.LENGTH)) is not None:
        notes.append(f"long axis taken from {long_m.name.meaning or long_m.name.value}")
    short_m = group.first(MeasurementKind.SHORT_AXIS)
    if short_m is None and (short_m := group.first(MeasurementKind.PERPENDICULAR)) is not None:
        notes.append(f"short axis taken from {short_m.name.meaning or short_m.name.value}")
    hu_m = group.first(MeasurementKind.MEAN_HU)
    computed = None if hu_m is not None else _computed_density(group, lookup, notes)
    for axis, chosen in ((MeasurementKind.LONG_AXIS, long_m), (MeasurementKind.SHORT_AXIS, short_m)):
        others = [
            m for m in group.measurements if m.kind is axis and chosen is not None and m.value != chosen.value
        ]
        if others:
            notes.append(f"{len(others) + 1} different {axis.value} values; the first one is used")
    used = [m for m in (long_m, short_m, hu_m) if m is not None]
    area = group.first(MeasurementKind.AREA)
    volume = group.first(MeasurementKind.VOLUME)
    # Stated lengths against their drawing where the image's pixel spacing is known.
    long_value, short_value = (
        _checked(report, m, lookup, notes) if m is not None else None for m in (long_m, short_m)
    )
    area_value = area.value if area is not None else None
    if area is not None and (note := geometry.check_ellipse_area(area, _spacing(report, area, lookup))):
        notes.append(note)
        area_value = None

    is_node = matches(group.finding, codes.NODE_FINDINGS) or any(
        matches(s, codes.LYMPH_NODE) for s in group.finding_sites
    )
    organ, organ_note = _organ(group.finding_sites, is_node)
    if organ_note:
        notes.append(organ_note)
    kind, status = _stated_role(group, notes)
    phase, acquisition, phase_unknown = image_context(report, group.images, lookup, rules)
    modality = acquisition.modality if acquisition is not None else None
    if phase_unknown and modality in (None, "CT"):
        notes.append(phase_unknown)
    location = _location(group.regions, [m.region for m in used])
    source: dict[str, object] = {
        "file": report.source,
        "sop_instance_uid": report.sop_instance_uid,
        "tracking_identifier": group.tracking_identifier,
        "tracking_uid": group.tracking_uid,
        "label": group.viewer_label,
        "reader": report.reader,
        "template": group.template,
        "concepts": {
            name: _code_text(m.name) + (f" [{_code_text(m.raw_unit)}]" if m.raw_unit else "")
            for name, m in (("long_axis_mm", long_m), ("short_axis_mm", short_m), ("mean_hu", hu_m))
            if m is not None
        },
        "finding": _code_text(group.finding) if group.finding else None,
        "finding_sites": [_code_text(s) for s in group.finding_sites],
        "images": [img.sop_instance_uid for img in group.images][:16],
        "context_from": acquisition.source if acquisition is not None else None,
    }
    if computed is not None:
        source["mean_hu_method"] = computed.text
    if group.identity is None and group.tracking_identifier:
        notes.append(
            f"Tracking Identifier {group.tracking_identifier!r} names the drawing tool, not the lesion; "
            "not used as its identity"
        )
    return Observation(
        tracking_uid=group.tracking_uid,
        tracking_identifier=group.identity,
        organ=organ,
        is_node=is_node,
        long_axis_mm=long_value,
        short_axis_mm=short_value,
        mean_hu=hu_m.value if hu_m else computed.mean_hu if computed else None,
        kind=kind,
        status=status,
        phase=phase,
        site_codes=group.finding_sites,
        location=location,
        area_mm2=area_value,
        volume_mm3=volume.value if volume else None,
        notes=tuple(notes) + group.warnings,
        source=source,
    )


def _spacing(report: SRReport, m: Measurement, lookup: SeriesLookup | None) -> tuple[Decimal, Decimal] | None:
    """Pixel Spacing of the image a measurement was drawn on, when the lookup knows it."""
    image = m.region.image if m.region is not None else None
    if lookup is None or image is None:
        return None
    ev = report.evidence_of(image.sop_instance_uid)
    info = lookup(ev.study_uid if ev else None, ev.series_uid if ev else None, image.sop_instance_uid)
    return info.pixel_spacing_mm if info is not None else None


def _checked(
    report: SRReport, m: Measurement, lookup: SeriesLookup | None, notes: list[str]
) -> Decimal | None:
    found = geometry.check_length(m, _spacing(report, m, lookup))
    if found.note:
        notes.append(found.note)
    return found.value


def _computed_density(
    group: MeasurementGroup, lookup: SeriesLookup | None, notes: list[str]
) -> density.Density | None:
    """The mean HU measured from the referenced CT image when the group gives none (and the lookup holds
    the image); the method, or why it could not be measured, goes in the notes."""
    if not isinstance(lookup, density.PixelSource):
        return None
    where = density.outline(group)
    if where is None:
        return None
    try:
        found = lookup.measure_density(where)
    except density.DensityError as exc:
        notes.append(
            f"mean HU not measured on image {density.image_hash(where.sop_instance_uid)}: {exc.reason}"
        )
        return None
    notes.append(found.text)
    return found


def _organ(sites: Sequence[Code], is_node: bool) -> tuple[str, str | None]:
    if is_node:
        return "lymph_node", None
    for site in sites:
        for code, organ in codes.ORGANS:
            if matches(site, code):
                return organ, None
    if sites:
        slug = re.sub(r"[^a-z0-9]+", "_", (sites[0].meaning or sites[0].value).lower()).strip("_")[:40]
        slug = slug or "unspecified"
        return slug, f"organ {slug!r} named from the finding site meaning (code not in the organ table)"
    return "unspecified", "no finding site: organ unspecified"


def _stated_role(group: MeasurementGroup, notes: list[str]) -> tuple[LesionKind | None, LesionStatus | None]:
    kind: LesionKind | None = None
    role = group.evaluation(codes.LESION_ROLE)
    if role is not None and role.code is not None:
        for name, code in codes.ROLES.items():
            if matches(role.code, code):
                kind = LesionKind(name)
    if kind is None:
        category = group.evaluation(codes.BASELINE_CATEGORY)
        if category is not None and category.code is not None:
            if matches(category.code, codes.TARGET_LESION_AT_BASELINE):
                kind = LesionKind.TARGET
            elif matches(category.code, codes.NON_TARGET_LESION_AT_BASELINE):
                kind = LesionKind.NON_TARGET
    status: LesionStatus | None = None
    stated = group.evaluation(codes.LESION_STATUS)
    if (
        stated is not None
        and stated.code is not None
        and stated.code.scheme_designator == codes.PRIVATE_SCHEME
    ):
        try:
            status = LesionStatus(stated.code.value)
        except ValueError:
            notes.append(f"unknown lesion status {stated.code.value!r}; ignored")
        if status is not None and kind is not None and status not in STATUSES_BY_KIND[kind]:
            notes.append(f"status {status.value!r} is not valid for a {kind.value} lesion; ignored")
            status = None
    return kind, status


def _location(regions: Sequence[Region], measured: Sequence[Region | None]) -> tuple[float, ...] | None:
    for region in [*measured, *regions]:
        if region is not None and region.frame_of_reference_uid is not None:
            centre = region.centre
            if len(centre) == 3:
                return centre
    return None


def _code_text(code: Code | None) -> str:
    if code is None:
        return ""
    return f"({code.value}, {code.scheme_designator}, {code.meaning!r})"
