"""Read lesion measurements from real-world DICOM SR measurement reports (TID 1500 and look-alikes).

``read_sr(source)`` turns one SR file (or dataset) into an :class:`SRReport`: the SR's header facts plus one
:class:`MeasurementGroup` per lesion-like measurement group, with every value already normalised (mm, mm²,
mm³, HU, ``Decimal``) and a list of warnings saying what could not be used and why. Nothing is guessed: a
value in pixels or in an unknown unit is skipped with a warning.

Two paths produce the same records:

* highdicom (Comprehensive, Comprehensive 3D and Enhanced SR whose tree it accepts): the groups come from its
  three getters (planar ROI, volumetric ROI and image measurement groups). A root that is TID 1500 by
  structure but lacks the template id is given one before parsing.
* a tolerant pydicom walker for everything highdicom refuses (an empty NUM, unnamed containers, Basic Text SR
  carrying measurements, private templates such as NCI AIM): a measurement belongs to the nearest enclosing
  item that carries a Tracking Identifier (else a Tracking UID, else the nearest Measurement Group, else the
  nearest container).

Both paths are bounded (depth and item counts, file size) and never follow by-reference items, so no input
can make them hang or grow without limit. The only exception this module raises is :class:`SRReadError`.
It never touches the database or the network.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code

from agent.sr import codes
from agent.sr.codes import matches
from agent.sr.values import parse_da

#: SR Storage SOP classes whose content tree we read.
SR_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR",
}
HIGHDICOM_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.34",
)
# Image storage SOP class -> modality, to know the modality from the evidence when nothing else says it.
SOP_CLASS_MODALITY = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.130": "PT",
    "1.2.840.10008.5.1.4.1.1.6.1": "US",
}
_T = TypeVar("_T")
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


#: Why a response report of ours without lesion groups (a pre-read) gives no time point.
PRE_READ_REASON = "a liver-agent pre-read or sums-only report: no lesion measured in its own study"


class SRReadError(Exception):
    """An SR file that cannot be used; ``reason`` is one line fit for an operator.

    Raised for: unreadable or non-DICOM files, objects that are not SR documents, content trees beyond the
    configured limits, and (by :func:`require_measurements`) documents without any usable measurement.
    """

    def __init__(self, reason: str, source: str | None = None) -> None:
        super().__init__(f"{source}: {reason}" if source else reason)
        self.reason = reason
        self.source = source


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep hostile or broken files cheap to read."""

    max_depth: int = 48
    max_items: int = 20_000
    max_file_bytes: int = 64 * 1024 * 1024
    max_groups: int = 2_000


class MeasurementKind(StrEnum):
    LONG_AXIS = "long_axis"
    SHORT_AXIS = "short_axis"
    LENGTH = "length"  # diameter / length / major axis: the long axis when none is given
    PERPENDICULAR = "perpendicular"  # perpendicular / minor axis: the short axis when none is given
    MEAN_HU = "mean_hu"
    AREA = "area"
    VOLUME = "volume"
    OTHER = "other"


_UNIT_OF_KIND = {
    MeasurementKind.LONG_AXIS: "mm",
    MeasurementKind.SHORT_AXIS: "mm",
    MeasurementKind.LENGTH: "mm",
    MeasurementKind.PERPENDICULAR: "mm",
    MeasurementKind.MEAN_HU: "HU",
    MeasurementKind.AREA: "mm2",
    MeasurementKind.VOLUME: "mm3",
}


@dataclass(frozen=True, slots=True)
class ImageRef:
    sop_class_uid: str | None
    sop_instance_uid: str
    frames: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Region:
    """Where a measurement was drawn: a 2D SCOORD on an image or a 3D SCOORD3D in patient space."""

    graphic_type: str
    points: tuple[float, ...]
    image: ImageRef | None = None
    frame_of_reference_uid: str | None = None

    @property
    def centre(self) -> tuple[float, ...]:
        dims = 3 if self.frame_of_reference_uid is not None else 2
        pts = [self.points[i : i + dims] for i in range(0, len(self.points) - dims + 1, dims)]
        if not pts:
            return ()
        return tuple(sum(p[d] for p in pts) / len(pts) for d in range(dims))


@dataclass(frozen=True, slots=True)
class Measurement:
    """One NUM. ``value`` is normalised to ``unit`` (mm, mm2, mm3 or HU); OTHER keeps the raw value."""

    name: Code
    kind: MeasurementKind
    value: Decimal
    unit: str
    raw_value: str
    raw_unit: Code | None
    derivation: Code | None = None
    method: Code | None = None
    images: tuple[ImageRef, ...] = ()
    region: Region | None = None


@dataclass(frozen=True, slots=True)
class TimePointContext:
    """TID 1502 (only the rows that were present)."""

    subject_time_point_identifier: str | None = None
    protocol_time_point_identifier: str | None = None
    time_point: str | None = None
    time_point_type: Code | None = None
    time_point_order: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A qualitative evaluation (CODE or TEXT) of a group, e.g. Baseline Category."""

    name: Code
    code: Code | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class MeasurementGroup:
    """One measurement group of a report: normally one lesion at one time point."""

    tracking_identifier: str | None
    tracking_uid: str | None
    finding: Code | None
    finding_category: Code | None
    finding_sites: tuple[Code, ...]
    measurements: tuple[Measurement, ...]
    images: tuple[ImageRef, ...]
    regions: tuple[Region, ...]
    time_point: TimePointContext | None
    evaluations: tuple[Evaluation, ...]
    method: Code | None = None
    template: str | None = None  # "1410" / "1411" / "1501" when highdicom classified it
    warnings: tuple[str, ...] = ()
    viewer_label: str | None = None  # the radiologist's label as written (Comment / free-text finding)

    @property
    def identity(self) -> str | None:
        """The text naming this lesion: the viewer label, else a Tracking Identifier that is not a tool
        name (None when neither says which lesion it is)."""
        if self.viewer_label:
            return self.viewer_label
        if self.tracking_identifier and not is_tool_name(self.tracking_identifier):
            return self.tracking_identifier
        return None

    def first(self, kind: MeasurementKind) -> Measurement | None:
        for m in self.measurements:
            if m.kind is kind:
                return m
        return None

    def evaluation(self, name: Code) -> Evaluation | None:
        for e in self.evaluations:
            if matches(e.name, name):
                return e
        return None

    @property
    def label(self) -> str:
        return self.viewer_label or self.tracking_identifier or self.tracking_uid or "(unnamed group)"


def is_tool_name(identifier: str) -> bool:
    """Whether a Tracking Identifier names the viewer's drawing tool rather than a lesion."""
    return re.match(codes.TOOL_NAME_IDENTIFIER, identifier, re.IGNORECASE) is not None


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    study_uid: str | None
    series_uid: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None
    study_date: date | None = None


@dataclass(frozen=True, slots=True)
class SRReport:
    """What one SR document says, before lesions are given identities and roles."""

    source: str | None
    sop_class_uid: str
    sop_instance_uid: str | None
    series_uid: str | None
    study_uid: str | None
    patient_id: str | None
    study_date: date | None
    series_date: date | None
    content_date: date | None
    content_time: str | None
    completion_flag: str | None
    verification_flag: str | None
    preliminary_flag: str | None
    manufacturer: str | None
    software_versions: str | None
    title: Code | None
    template_id: str | None
    procedure: Code | None
    evidence: tuple[EvidenceRef, ...]
    predecessors: tuple[str, ...]
    groups: tuple[MeasurementGroup, ...]
    reader: str  # "highdicom" or "walker"
    warnings: tuple[str, ...] = ()

    @property
    def sop_class_name(self) -> str:
        return SR_SOP_CLASSES.get(self.sop_class_uid, self.sop_class_uid)

    def evidence_of(self, sop_instance_uid: str | None) -> EvidenceRef | None:
        """The evidence entry of an instance that says most about it: an SR may list an image twice, in its
        evidence sequences (study, series) and in its Image Library (often without its series)."""
        found = [e for e in self.evidence if e.sop_instance_uid == sop_instance_uid]
        return max(found, key=lambda e: (e.series_uid is not None, e.study_uid is not None), default=None)

    def referenced_study_uids(self) -> list[str]:
        """Studies of the images measured (evidence and image library), most referenced first."""
        counts: dict[str, int] = {}
        for group in self.groups:
            for img in group.images:
                for ev in self.evidence:
                    if ev.sop_instance_uid == img.sop_instance_uid and ev.study_uid:
                        counts[ev.study_uid] = counts.get(ev.study_uid, 0) + 1
        for ev in self.evidence:
            if ev.study_uid:
                counts.setdefault(ev.study_uid, 0)
        return sorted(counts, key=lambda uid: -counts[uid])


# --------------------------------------------------------------------------------------------------------
# Entry points


class ReportCache:
    """Reports already read, by the SHA-256 of the file's bytes (so by SOP Instance UID and every byte of
    the content): a file read again unchanged, under any name, is never parsed again.

    Bounded (least recently used out first). The pipeline worker keeps one for its lifetime: the pre-read
    run and the final run of a study, and later follow-ups of the same patient, parse each prior once.
    Files that cannot be used are remembered too (their :class:`SRReadError` is raised again).
    """

    def __init__(self, max_entries: int = 2048) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[Any, ...], SRReport | str] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[Any, ...]) -> SRReport | str | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        return found

    def put(self, key: tuple[Any, ...], value: SRReport | str) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def read_sr(
    source: str | Path | Dataset,
    *,
    limits: Limits | None = None,
    use_highdicom: bool = True,
    cache: ReportCache | None = None,
) -> SRReport:
    """Read one SR document. Raises only :class:`SRReadError` (unusable file).

    A file is read from disk once and parsed once (highdicom converts that parse in place; only a tree it
    refuses is parsed again from the same bytes for the walker). With ``cache`` a file whose bytes were
    read before gives the earlier report (its ``source`` the name given now) without being parsed.
    """
    limits = limits or Limits()
    if isinstance(source, Dataset):
        return _guarded(lambda: _read_dataset(source, None, limits, use_highdicom, None), None)
    name = str(source)
    data = _guarded(lambda: _read_bytes(Path(source), limits), name)
    key = (hashlib.sha256(data).digest(), limits, use_highdicom)
    found = cache.get(key) if cache is not None else None
    if isinstance(found, SRReport):
        return found if found.source == name else replace(found, source=name)
    if found is not None:
        raise SRReadError(found, name)
    try:
        report = _guarded(
            lambda: _read_dataset(_parse(data), name, limits, use_highdicom, lambda: _parse(data)), name
        )
    except SRReadError as exc:
        if cache is not None:
            cache.put(key, exc.reason)
        raise
    if cache is not None:
        cache.put(key, report)
    return report


def _guarded(step: Callable[[], _T], name: str | None) -> _T:
    """``step()`` with every failure turned into :class:`SRReadError` naming ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return step()
    except SRReadError as exc:
        if exc.source is None and name is not None:
            raise SRReadError(exc.reason, name) from exc
        raise
    except RecursionError as exc:
        raise SRReadError("content tree too deeply nested", name) from exc
    except MemoryError as exc:
        raise SRReadError("content tree too large", name) from exc
    except Exception as exc:  # a malformed file must never escape as a traceback
        raise SRReadError(f"cannot read the SR content ({type(exc).__name__}: {_short(exc)})", name) from exc


def require_measurements(report: SRReport) -> SRReport:
    """``report`` if it holds at least one lesion-like group, else :class:`SRReadError` with the reason."""
    if any(_is_lesion_group(g)[0] for g in report.groups):
        return report
    if report.groups and all(matches(g.finding, codes.TARGET_SUM_FINDING) for g in report.groups):
        raise SRReadError(PRE_READ_REASON, report.source)
    if not report.groups:
        reason = "no measurement group or measurement in the content tree"
    else:
        why = sorted({_is_lesion_group(g)[1] for g in report.groups})
        reason = f"no usable lesion measurement in {len(report.groups)} group(s): " + "; ".join(why)
        skipped = list(dict.fromkeys(w for g in report.groups for w in g.warnings))
        if skipped:
            reason += f" ({skipped[0]}" + (f"; and {len(skipped) - 1} more" if len(skipped) > 1 else "") + ")"
    raise SRReadError(reason, report.source)


def is_lesion_group(group: MeasurementGroup) -> bool:
    """A group describes a lesion: it has a diameter, a lesion finding or an explicit lesion role."""
    return _is_lesion_group(group)[0]


def _is_lesion_group(group: MeasurementGroup) -> tuple[bool, str]:
    if group.finding_category is not None and matches(group.finding_category, codes.ANATOMICAL_STRUCTURE):
        return False, "measures an anatomical structure, not a lesion"
    if group.evaluation(codes.LESION_ROLE) or group.evaluation(codes.BASELINE_CATEGORY):
        return True, ""
    if any(
        m.kind in (MeasurementKind.LONG_AXIS, MeasurementKind.SHORT_AXIS, MeasurementKind.LENGTH)
        for m in group.measurements
    ):
        return True, ""
    if group.finding is not None and matches(group.finding, codes.LESION_FINDINGS + codes.NODE_FINDINGS):
        return True, ""
    if group.measurements:
        return False, "no diameter (long axis, short axis, length or diameter) in mm"
    return False, "no measurement"


# --------------------------------------------------------------------------------------------------------
# File and header


def _read_bytes(path: Path, limits: Limits) -> bytes:
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limits.max_file_bytes:
                raise SRReadError(
                    f"file of {size} bytes exceeds the {limits.max_file_bytes}-byte limit for an SR"
                )
            return fh.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise SRReadError(f"cannot open: {exc.strerror or exc}") from exc


def _parse(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError as exc:
        raise SRReadError("not a DICOM file") from exc
    except OSError as exc:
        raise SRReadError(f"cannot open: {exc.strerror or exc}") from exc


def _read_dataset(
    ds: Dataset,
    name: str | None,
    limits: Limits,
    use_highdicom: bool,
    reread: Callable[[], Dataset] | None,
) -> SRReport:
    """The report of ``ds``. highdicom converts the content tree it parses in place (even its
    ``from_dataset(copy=True)`` converts the items of the dataset given), so: with ``reread`` (a file
    source) it parses ``ds`` itself and a tree it refuses is parsed again from the file's bytes for the
    walker; without it (a caller's dataset) it parses a deep copy, and the caller's dataset stays as it
    was."""
    sop_class = str(_get(ds, "SOPClassUID") or "")
    if sop_class not in SR_SOP_CLASSES:
        what = _get(ds, "Modality") or "unknown modality"
        if sop_class:
            raise SRReadError(f"not an SR document (SOP class {sop_class}, {what})")
        raise SRReadError(f"not an SR document (no SOP Class UID, {what})")
    if _get(ds, "ValueType") not in ("CONTAINER", None) or "ContentSequence" not in ds:
        raise SRReadError("SR document without a content tree")
    _check_bounds(ds, limits)
    warns: list[str] = []
    # The header first: highdicom may convert the tree in place below.
    header_warns: list[str] = []
    header = _header(ds, header_warns)
    groups: list[MeasurementGroup] = []
    reader = "walker"
    if use_highdicom and sop_class in HIGHDICOM_SOP_CLASSES and _is_tid1500_by_structure(ds):
        try:
            hd_groups = _groups_via_highdicom(ds if reread is not None else copy.deepcopy(ds))
        except Exception as exc:  # highdicom refuses the tree: fall back to the tolerant walker
            warns.append(f"highdicom refused the tree ({type(exc).__name__}: {_short(exc)}); read tolerantly")
            hd_groups = None
        if hd_groups is not None:
            groups, reader = hd_groups, "highdicom"
        elif reread is not None:
            ds = reread()  # the walker reads the tree as stored, not as highdicom left it
    if reader == "walker":
        groups = _groups_via_walker(ds, limits)
    if len(groups) > limits.max_groups:
        raise SRReadError(f"more than {limits.max_groups} measurement groups")
    warns += header_warns
    return SRReport(source=name, groups=tuple(groups), reader=reader, warnings=tuple(warns), **header)


def _header(ds: Dataset, warns: list[str]) -> dict[str, Any]:
    title = _concept(ds)
    template = None
    tmpl = _seq(ds, "ContentTemplateSequence")
    if tmpl:
        template = _str(_get(tmpl[0], "TemplateIdentifier"))
    evidence: list[EvidenceRef] = []
    for seq_name in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in _seq(ds, seq_name):
            study_uid = _str(_get(study, "StudyInstanceUID"))
            for series in _seq(study, "ReferencedSeriesSequence"):
                series_uid = _str(_get(series, "SeriesInstanceUID"))
                for sop in _seq(series, "ReferencedSOPSequence"):
                    evidence.append(
                        EvidenceRef(
                            study_uid,
                            series_uid,
                            _str(_get(sop, "ReferencedSOPInstanceUID")),
                            _str(_get(sop, "ReferencedSOPClassUID")),
                        )
                    )
    evidence.extend(_image_library(ds))
    predecessors = [
        uid
        for study in _seq(ds, "PredecessorDocumentsSequence")
        for series in _seq(study, "ReferencedSeriesSequence")
        for sop in _seq(series, "ReferencedSOPSequence")
        if (uid := _str(_get(sop, "ReferencedSOPInstanceUID")))
    ]
    procedure = None
    for item in _children(ds):
        if matches(_concept(item), codes.PROCEDURE_REPORTED):
            procedure = _code_value(item)
    study_date = parse_da(_str(_get(ds, "StudyDate")))
    if _get(ds, "StudyDate") and study_date is None:
        warns.append(f"Study Date {_get(ds, 'StudyDate')!r} is not a valid date")
    return {
        "sop_class_uid": str(_get(ds, "SOPClassUID")),
        "sop_instance_uid": _str(_get(ds, "SOPInstanceUID")),
        "series_uid": _str(_get(ds, "SeriesInstanceUID")),
        "study_uid": _str(_get(ds, "StudyInstanceUID")),
        "patient_id": _str(_get(ds, "PatientID")),
        "study_date": study_date,
        "series_date": parse_da(_str(_get(ds, "SeriesDate"))),
        "content_date": parse_da(_str(_get(ds, "ContentDate"))),
        "content_time": _str(_get(ds, "ContentTime")),
        "completion_flag": _str(_get(ds, "CompletionFlag")),
        "verification_flag": _str(_get(ds, "VerificationFlag")),
        "preliminary_flag": _str(_get(ds, "PreliminaryFlag")),
        "manufacturer": _str(_get(ds, "Manufacturer")),
        "software_versions": _str(_get(ds, "SoftwareVersions")),
        "title": title,
        "template_id": template,
        "procedure": procedure,
        "evidence": tuple(evidence),
        "predecessors": tuple(predecessors),
    }


def _image_library(ds: Dataset) -> Iterator[EvidenceRef]:
    """TID 1600 / AIM image library entries: the studies (and dates) of the measured images."""
    for lib in _children(ds):
        if _get(lib, "ValueType") != "CONTAINER" or not matches(_concept(lib), codes.IMAGE_LIBRARY):
            continue
        stack: list[tuple[Dataset, dict[str, Any]]] = [(lib, {})]
        budget = 10_000
        while stack and budget > 0:
            item, inherited = stack.pop()
            budget -= 1
            ctx = dict(inherited)
            for child in _children(item):
                concept = _concept(child)
                if matches(concept, codes.STUDY_INSTANCE_UID):
                    ctx["study_uid"] = _str(_get(child, "UID"))
                elif matches(concept, codes.SERIES_INSTANCE_UID):
                    ctx["series_uid"] = _str(_get(child, "UID"))
                elif matches(concept, codes.STUDY_DATE):
                    ctx["study_date"] = parse_da(_str(_get(child, "Date")))
            if _get(item, "ValueType") == "IMAGE":
                ref = _image_ref(item)
                if ref is not None:
                    yield EvidenceRef(
                        ctx.get("study_uid"),
                        ctx.get("series_uid"),
                        ref.sop_instance_uid,
                        ref.sop_class_uid,
                        ctx.get("study_date"),
                    )
            for child in _children(item):
                if _get(child, "ValueType") in ("CONTAINER", "IMAGE"):
                    stack.append((child, ctx))


def _check_bounds(ds: Dataset, limits: Limits) -> None:
    """Refuse trees deeper or larger than the limits before anything recursive looks at them."""
    count = 0
    stack: list[tuple[Dataset, int]] = [(ds, 0)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > limits.max_items:
            raise SRReadError(f"content tree has more than {limits.max_items} items")
        if depth > limits.max_depth:
            raise SRReadError(f"content tree nested deeper than {limits.max_depth} levels")
        for child in _children(item):
            stack.append((child, depth + 1))


# --------------------------------------------------------------------------------------------------------
# highdicom path


def _groups_via_highdicom(ds: Dataset) -> list[MeasurementGroup] | None:
    """Groups of a TID 1500 tree as highdicom parses and classifies them, or None when highdicom does not
    parse the root as a measurement report.

    highdicom converts the whole tree of ``ds`` once, in place (``from_dataset``). The groups are
    then classified as its three getters do (planar ROI 1410, volumetric ROI 1411, image measurements 1501;
    template id, else the ROI items present), but without their per-group deep copy and re-parse of an
    already parsed tree; a getter's result is used only where it cannot be had otherwise (a highdicom
    release without the helpers it uses).
    """
    import highdicom as hd

    order = _group_document_order(ds)
    root = ds
    if not _seq(ds, "ContentTemplateSequence"):
        # TID 1500 by structure without the (Type 1C) template id: give it one so highdicom parses it.
        root = Dataset()
        for elem in ds:
            root.add(elem)
        tmpl = Dataset()
        tmpl.MappingResource = "DCMR"
        tmpl.TemplateIdentifier = "1500"
        root.ContentTemplateSequence = [tmpl]
    sop_cls: Any = {
        "1.2.840.10008.5.1.4.1.1.88.22": hd.sr.EnhancedSR,
        "1.2.840.10008.5.1.4.1.1.88.33": hd.sr.ComprehensiveSR,
        "1.2.840.10008.5.1.4.1.1.88.34": hd.sr.Comprehensive3DSR,
    }[str(ds.SOPClassUID)]
    sr = sop_cls.from_dataset(root, copy=False)
    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        return None
    out: list[tuple[int, MeasurementGroup]] = []
    for template, item in _classified_groups(report):
        out.append((order.get(_group_key(item), len(order)), _group_from_highdicom(item, template)))
    out.sort(key=lambda pair: pair[0])
    return [g for _, g in out]


def _classified_groups(report: Any) -> list[tuple[str, Dataset]]:
    """(template, group item) in the order of highdicom's getters: all 1410, then 1411, then 1501.

    The selection is the getters' own (highdicom 0.28/0.29 ``MeasurementReport``): a group with a template
    id goes to that template, one without to planar or volumetric by the ROI items it holds (both when it
    qualifies for both), else to image measurements.
    """
    from highdicom.sr import templates as hdt

    find = getattr(report, "_find_measurement_groups", None)
    planar = getattr(hdt, "_contains_planar_rois", None)
    volumetric = getattr(hdt, "_contains_volumetric_rois", None)
    if find is None or planar is None or volumetric is None:  # another highdicom: its public getters
        return [
            (template, g[0])
            for template, getter in (
                ("1410", report.get_planar_roi_measurement_groups),
                ("1411", report.get_volumetric_roi_measurement_groups),
                ("1501", report.get_image_measurement_groups),
            )
            for g in getter()
        ]
    items = find()
    out: list[tuple[str, Dataset]] = []
    for template, test in (
        ("1410", planar),
        ("1411", volumetric),
        ("1501", lambda i: not (planar(i) or volumetric(i))),
    ):
        for item in items:
            tid = item.template_id
            if (tid == template) if tid is not None else test(item):
                out.append((template, item))
    return out


class _Children:
    """The children of a parsed highdicom content item, matched as ``highdicom.sr.find_content_items`` does
    (same name and value-type comparison, direct children only), each child's probe built once instead of
    once per query."""

    __slots__ = ("entries",)

    def __init__(self, item: Dataset, *, required: bool) -> None:
        from highdicom.sr import CodedConcept, ContentItem

        self.entries: list[tuple[Any, Dataset]] = []
        if not hasattr(item, "ContentSequence"):
            if required:  # find_content_items refuses an item without children
                raise AttributeError("Data set does not contain a Content Sequence attribute.")
            return
        for child in item.ContentSequence:
            name_code = child.ConceptNameCodeSequence[0]
            if hasattr(name_code, "CodeValue"):
                code_value = name_code.CodeValue
            elif hasattr(name_code, "LongCodeValue"):
                code_value = name_code.LongCodeValue
            else:
                code_value = name_code.URNCodeValue
            probe = ContentItem(
                value_type=child.ValueType,
                name=CodedConcept(
                    value=code_value,
                    scheme_designator=name_code.CodingSchemeDesignator,
                    meaning=name_code.CodeMeaning,
                ),
                relationship_type=child.get("RelationshipType", None),
            )
            self.entries.append((probe, child))

    def find(self, value_type: Any, name: Any = None) -> list[Any]:
        from highdicom.sr import ValueTypeValues

        vt = ValueTypeValues(value_type)
        return [
            child
            for probe, child in self.entries
            if probe.value_type == vt and (name is None or probe.name == name)
        ]

    def first_value(self, value_type: Any, name: Any) -> Any:
        found = self.find(value_type, name)
        return found[0].value if found else None


def _group_from_highdicom(item: Dataset, template: str) -> MeasurementGroup:
    """Core fields as highdicom's group template reads them; what it does not expose (TID 1502,
    evaluations) from the tree.

    The values are those of highdicom's properties (``finding_type``, ``finding_category``,
    ``finding_sites``, ``method``, ``get_measurements()`` with each measurement's ``derivation`` and
    ``method``, ``roi``, ``tracking_uid``, ``tracking_identifier``), found in one pass over the group's
    children rather than one search of them per property.
    """
    import highdicom as hd
    from highdicom.sr import ValueTypeValues
    from highdicom.sr.templates import VolumetricROIMeasurementsAndQualitativeEvaluations
    from highdicom.uid import UID
    from pydicom.sr.codedict import codes as dcm

    code, text, uidref, num = (
        ValueTypeValues.CODE,
        ValueTypeValues.TEXT,
        ValueTypeValues.UIDREF,
        ValueTypeValues.NUM,
    )
    children = _Children(item, required=True)
    warns: list[str] = []
    finding = _as_code(children.first_value(code, dcm.DCM.Finding))
    category = _as_code(children.first_value(code, Code("276214006", "SCT", "Finding category")))
    sites = [c for fs in children.find(code, dcm.SCT.FindingSite) if (c := _as_code(fs.value)) is not None]
    method = _as_code(children.first_value(code, dcm.SCT.MeasurementMethod))
    measurements: list[Measurement] = []
    # highdicom's measurements as get_measurements() builds them (value re-encoded, relationship CONTAINS),
    # without its copy of each NUM's modifiers: those are read from the NUM itself.
    rebuilt_all: list[tuple[Dataset, Any]] = []
    for num_item in children.find(num):
        if not isinstance(num_item, hd.sr.NumContentItem):
            raise TypeError("Measurement shall contain a NUM content item.")
        rebuilt_all.append(
            (
                num_item,
                hd.sr.Measurement(
                    name=num_item.name, value=num_item.value, unit=num_item.unit, qualifier=num_item.qualifier
                ),
            )
        )
    for num_item, rebuilt in rebuilt_all:
        value_item: Dataset = rebuilt[0]
        if _get(value_item, "RelationshipType") != "CONTAINS":
            continue  # TID 1502 Time Point Order and other context NUMs
        modifiers = _Children(num_item, required=False)
        images, region = _references(num_item)
        measurement = _measurement(
            name=_as_code(rebuilt.name),
            raw_value=_raw_numeric(value_item),
            unit=_as_code(rebuilt.unit),
            derivation=_as_code(modifiers.first_value(code, dcm.DCM.Derivation)),
            method=_as_code(modifiers.first_value(code, dcm.SCT.MeasurementMethod)) or method,
            dimension_label=None,
            images=images,
            region=region,
            warns=warns,
        )
        if measurement is not None:
            measurements.append(measurement)
    for fs in _measurement_sites(item):
        if fs not in sites:
            sites.append(fs)
    images, regions = _group_references(item)
    roi: Any = None
    if template == "1410":
        scoords = children.find(ValueTypeValues.SCOORD, dcm.DCM.ImageRegion)
        scoords3d = [] if scoords else children.find(ValueTypeValues.SCOORD3D, dcm.DCM.ImageRegion)
        if scoords:
            roi = hd.sr.ImageRegion.from_dataset(scoords[0], copy=False)
        elif scoords3d:
            roi = hd.sr.ImageRegion3D.from_dataset(scoords3d[0], copy=False)
    elif template == "1411":  # a volume surface or a list of regions: evaluated as highdicom does, unused
        group: Any = hd.sr.ContentSequence([item], is_root=False, is_sr=True)  # type: ignore[list-item]
        group.__class__ = VolumetricROIMeasurementsAndQualitativeEvaluations
        roi = group.roi
    if roi is not None:
        refs, region = _references_of_region(roi)
        images = _unique(images + refs)
        if region is not None and region not in regions:
            regions.append(region)
    tracking_uid_value = children.first_value(uidref, dcm.DCM.TrackingUniqueIdentifier)
    tracking_uid = _checked_uid(UID(tracking_uid_value) if tracking_uid_value is not None else None, warns)
    viewer_label, finding, sites = _viewer_label(item, finding, sites)
    return MeasurementGroup(
        tracking_identifier=_clean_text(children.first_value(text, dcm.DCM.TrackingIdentifier)),
        tracking_uid=tracking_uid,
        viewer_label=viewer_label,
        finding=finding,
        finding_category=category,
        finding_sites=tuple(sites),
        measurements=tuple(measurements),
        images=tuple(images),
        regions=tuple(regions),
        time_point=_time_point(item),
        evaluations=tuple(_evaluations(item)),
        method=method,
        template=template,
        warnings=tuple(warns),
    )


def _group_key(item: Dataset) -> tuple[str | None, str | None, int]:
    tid = tuid = None
    for child in _children(item):
        concept = _concept(child)
        if matches(concept, codes.TRACKING_IDENTIFIER):
            tid = _text_value(child)
        elif matches(concept, codes.TRACKING_UID):
            tuid = _str(_get(child, "UID"))
    return tid, tuid, len(_children(item))


def _group_document_order(ds: Dataset) -> dict[tuple[str | None, str | None, int], int]:
    order: dict[tuple[str | None, str | None, int], int] = {}
    for container in _children(ds):
        if matches(_concept(container), codes.IMAGING_MEASUREMENTS):
            for i, g in enumerate(_children(container)):
                order.setdefault(_group_key(g), i)
    return order


def _is_tid1500_by_structure(ds: Dataset) -> bool:
    tmpl = _seq(ds, "ContentTemplateSequence")
    if tmpl and _str(_get(tmpl[0], "TemplateIdentifier")) == "1500":
        return True
    if not matches(_concept(ds), codes.REPORT_TITLES):
        return False
    return any(matches(_concept(c), codes.IMAGING_MEASUREMENTS) for c in _children(ds))


# --------------------------------------------------------------------------------------------------------
# Tolerant walker


@dataclass(slots=True)
class _Node:
    item: Dataset
    parent: int | None
    depth: int
    children: list[int] = field(default_factory=list)


def _groups_via_walker(ds: Dataset, limits: Limits) -> list[MeasurementGroup]:
    nodes: list[_Node] = [_Node(ds, None, 0)]
    stack = [0]
    while stack:
        idx = stack.pop()
        node = nodes[idx]
        if node.depth >= limits.max_depth:
            continue
        for child in _children(node.item):
            if len(nodes) >= limits.max_items:
                raise SRReadError(f"content tree has more than {limits.max_items} items")
            nodes.append(_Node(child, idx, node.depth + 1))
            node.children.append(len(nodes) - 1)
            stack.append(len(nodes) - 1)
    # Skip the image library and the document-level context.
    excluded: set[int] = set()
    for idx, node in enumerate(nodes):
        parent = node.parent
        if (parent is not None and parent in excluded) or matches(
            _concept(node.item), (codes.IMAGE_LIBRARY, codes.IMAGE_LIBRARY_GROUP)
        ):
            excluded.add(idx)

    def direct(idx: int, concept: Code | Sequence[Code]) -> Dataset | None:
        for c in nodes[idx].children:
            if matches(_concept(nodes[c].item), concept):
                return nodes[c].item
        return None

    def owner_of(idx: int) -> int:
        chain: list[int] = []
        p = nodes[idx].parent
        while p is not None:
            chain.append(p)
            p = nodes[p].parent
        tests: tuple[Callable[[int], bool], ...] = (
            lambda i: direct(i, codes.TRACKING_IDENTIFIER) is not None,
            lambda i: direct(i, codes.TRACKING_UID) is not None and i != 0,
            lambda i: (
                _get(nodes[i].item, "ValueType") == "CONTAINER"
                and matches(_concept(nodes[i].item), codes.MEASUREMENT_GROUP)
            ),
            lambda i: _get(nodes[i].item, "ValueType") == "CONTAINER" or i == 0,
        )
        for test in tests:
            for i in chain:
                if test(i):
                    return i
        return 0

    owners: dict[int, list[int]] = {}
    for idx, node in enumerate(nodes):
        if idx in excluded or _get(node.item, "ValueType") != "NUM":
            continue
        if _get(node.item, "RelationshipType") not in ("CONTAINS", "INFERRED FROM", "HAS PROPERTIES", None):
            continue  # context NUMs (Time Point Order), modifiers
        owners.setdefault(owner_of(idx), []).append(idx)
    # Groups without any NUM (non-target lesions, annotations): Measurement Group containers.
    for idx, node in enumerate(nodes):
        if idx in excluded or idx in owners:
            continue
        is_group = _get(node.item, "ValueType") == "CONTAINER" and matches(
            _concept(node.item), codes.MEASUREMENT_GROUP
        )
        if is_group and not any(_is_ancestor(nodes, idx, o) for o in owners):
            owners[idx] = []
    groups: list[MeasurementGroup] = []
    for owner in sorted(owners):
        groups.append(_group_from_walk(nodes, owner, owners[owner], set(owners) - {owner}))
    return groups


def _is_ancestor(nodes: list[_Node], ancestor: int, idx: int) -> bool:
    p = nodes[idx].parent
    while p is not None:
        if p == ancestor:
            return True
        p = nodes[p].parent
    return False


def _group_from_walk(
    nodes: list[_Node], owner: int, nums: list[int], other_owners: set[int]
) -> MeasurementGroup:
    item = nodes[owner].item
    warns: list[str] = []
    tid = tuid = None
    finding = category = method = None
    sites: list[Code] = []
    for c in nodes[owner].children:
        child = nodes[c].item
        concept = _concept(child)
        if matches(concept, codes.TRACKING_IDENTIFIER):
            tid = _text_value(child)
            if _get(child, "ValueType") == "UIDREF":
                warns.append("Tracking Identifier is encoded as UIDREF; read as text")
        elif matches(concept, codes.TRACKING_UID):
            tuid = _checked_uid(_str(_get(child, "UID")), warns)
        elif matches(concept, codes.FINDING):
            finding = _code_value(child)
        elif matches(concept, codes.FINDING_CATEGORY):
            category = _code_value(child)
        elif matches(concept, (*codes.FINDING_SITES, codes.AIM_ANATOMIC_ENTITY)):
            if (site := _code_value(child)) is not None:
                sites.append(site)
        elif matches(concept, codes.MEASUREMENT_METHODS):
            method = _code_value(child)
    for fs in _measurement_sites(item):
        if fs not in sites:
            sites.append(fs)
    measurements: list[Measurement] = []
    for n in nums:
        num = nodes[n].item
        derivation = num_method = None
        dimension_label = None
        for c in nodes[n].children:
            concept = _concept(nodes[c].item)
            if matches(concept, codes.DERIVATION):
                derivation = _code_value(nodes[c].item)
            elif matches(concept, codes.MEASUREMENT_METHODS):
                num_method = _code_value(nodes[c].item)
        # A method stated on an enclosing container below the owner (AIM "Calculation") applies too.
        p = nodes[n].parent
        while num_method is None and p is not None and p != owner:
            found = next(
                (
                    nodes[c].item
                    for c in nodes[p].children
                    if matches(_concept(nodes[c].item), codes.MEASUREMENT_METHODS)
                ),
                None,
            )
            if found is not None:
                num_method = _code_value(found)
            p = nodes[p].parent
        images, region = _references(num)
        if region is None:
            # dwv 0.34: the NUM hangs under the SCOORD it was measured on.
            parent_idx = nodes[n].parent
            parent_item = nodes[parent_idx].item if parent_idx is not None else None
            if parent_item is not None and _get(parent_item, "ValueType") in ("SCOORD", "SCOORD3D"):
                region = _region(parent_item)
                images = _unique(images + ([region.image] if region and region.image else []))
        m = _measurement(
            name=_concept(num),
            raw_value=_raw_numeric(num),
            unit=_unit(num),
            derivation=derivation,
            method=num_method or method,
            dimension_label=dimension_label,
            images=images,
            region=region,
            warns=warns,
        )
        if m is not None:
            measurements.append(m)
    images, regions = _group_references(item, skip=lambda ds: any(nodes[o].item is ds for o in other_owners))
    if _get(item, "ValueType") in ("SCOORD", "SCOORD3D") and (r := _region(item)) is not None:
        regions.insert(0, r)
        if r.image is not None:
            images = _unique([r.image, *images])
    for m in measurements:
        images = _unique(images + list(m.images))
    viewer_label, finding, sites = _viewer_label(item, finding, sites)
    return MeasurementGroup(
        tracking_identifier=tid,
        tracking_uid=tuid,
        viewer_label=viewer_label,
        finding=finding,
        finding_category=category,
        finding_sites=tuple(sites),
        measurements=tuple(measurements),
        images=tuple(images),
        regions=tuple(regions),
        time_point=_time_point(item),
        evaluations=tuple(_evaluations(item)),
        method=method,
        template=None,
        warnings=tuple(warns),
    )


# --------------------------------------------------------------------------------------------------------
# Shared item readers


def _utf8_undeclared(text: str) -> str:
    """UTF-8 written without Specific Character Set (Cornerstone3D's adapters set it on the report object,
    not on the dataset): read back as Latin-1 it is mojibake ("lÃ¤sion"); the UTF-8 reading is kept when the
    bytes are valid UTF-8."""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _is_free_text(code: Code | None) -> bool:
    return code is not None and code.value in codes.FREE_TEXT_CODE_VALUES


def _viewer_label(
    item: Dataset, finding: Code | None, sites: Sequence[Code]
) -> tuple[str | None, Code | None, list[Code]]:
    """The radiologist's label of a group (a TEXT Comment among its children, else the meaning of a
    free-text finding or finding site), and the finding and sites without the free-text codes (a label is
    not an anatomical site)."""
    label: str | None = None
    for child in _children(item):
        if _get(child, "ValueType") == "TEXT" and matches(_concept(child), codes.COMMENT):
            label = _clean_text(_get(child, "TextValue"))
            if label and label.strip():
                break
            label = None
    for code in (finding, *sites):
        if (
            label is None
            and code is not None
            and _is_free_text(code)
            and code.meaning
            and code.meaning.strip()
        ):
            label = code.meaning[:1024]
    kept_finding = None if _is_free_text(finding) else finding
    return (
        (_utf8_undeclared(label.strip()) if label else None),
        kept_finding,
        [s for s in sites if not _is_free_text(s)],
    )


def _measurement(
    *,
    name: Code | None,
    raw_value: str | None,
    unit: Code | None,
    derivation: Code | None,
    method: Code | None,
    dimension_label: str | None,
    images: list[ImageRef],
    region: Region | None,
    warns: list[str],
) -> Measurement | None:
    """Classify and normalise one NUM; None (with a warning) when it cannot be used."""
    if name is None:
        warns.append("a NUM without a concept name was skipped")
        return None
    label = _code_label(name)
    if raw_value is None:
        warns.append(f"{label} has no measured value; skipped")
        return None
    try:
        value = Decimal(raw_value)
    except (InvalidOperation, ValueError):
        warns.append(f"{label} value {raw_value!r} is not a number; skipped")
        return None
    if not value.is_finite():
        warns.append(f"{label} value {raw_value!r} is not finite; skipped")
        return None
    if unit is None:
        warns.append(f"{label} = {raw_value} has no unit; skipped")
        return None
    kind = _kind(name, unit, derivation, method)
    if kind is MeasurementKind.OTHER:
        return Measurement(
            name, kind, _tidy(value), unit.value, raw_value, unit, derivation, method, tuple(images), region
        )
    normalised = _normalise(value, unit, kind)
    if normalised is None:
        expected = _UNIT_OF_KIND[kind]
        warns.append(
            f"{label} = {raw_value} in ({unit.value}, {unit.scheme_designator}) cannot be converted to "
            f"{expected}; skipped (never guessed)"
        )
        return None
    converted, note = normalised
    if note:
        warns.append(f"{label}: {note}")
    return Measurement(
        name, kind, converted, _UNIT_OF_KIND[kind], raw_value, unit, derivation, method, tuple(images), region
    )


def _kind(name: Code, unit: Code, derivation: Code | None, method: Code | None) -> MeasurementKind:
    dimension = _unit_dimension(unit)
    if matches(name, codes.LONG_AXIS_NAMES):
        return MeasurementKind.LONG_AXIS
    if matches(name, codes.SHORT_AXIS_NAMES):
        return MeasurementKind.SHORT_AXIS
    if matches(name, codes.LENGTH_NAMES):
        # dcmjs labels ellipse areas with the Length code: trust the unit's dimension, not the name.
        if dimension == "area":
            return MeasurementKind.AREA
        return MeasurementKind.LENGTH
    if matches(name, codes.PERPENDICULAR_NAMES):
        return MeasurementKind.PERPENDICULAR
    if matches(name, codes.AREA_NAMES):
        return MeasurementKind.AREA
    if matches(name, codes.VOLUME_NAMES):
        return MeasurementKind.VOLUME
    if matches(name, codes.ATTENUATION_COEFFICIENT):
        if derivation is not None and matches(derivation, codes.MEAN):
            return MeasurementKind.MEAN_HU
        return MeasurementKind.OTHER
    if matches(name, codes.MEAN_INTENSITY_NAMES) and dimension == "hu":
        return MeasurementKind.MEAN_HU
    if dimension == "length" and method is not None and matches(method, codes.LENGTH_METHODS):
        return MeasurementKind.LENGTH  # an otherwise unnamed value whose method says it is a length (AIM)
    return MeasurementKind.OTHER


def _unit_dimension(unit: Code) -> str | None:
    v = unit.value
    if v in codes.LENGTH_UNITS_MM:
        return "length"
    if v in codes.AREA_UNITS_MM2:
        return "area"
    if v in codes.VOLUME_UNITS_MM3:
        return "volume"
    if v in codes.HOUNSFIELD_UNITS:
        return "hu"
    return None


def _normalise(value: Decimal, unit: Code, kind: MeasurementKind) -> tuple[Decimal, str] | None:
    expected = _UNIT_OF_KIND[kind]
    table: dict[str, float]
    if expected == "mm":
        table = codes.LENGTH_UNITS_MM
    elif expected == "mm2":
        table = codes.AREA_UNITS_MM2
    elif expected == "mm3":
        table = codes.VOLUME_UNITS_MM3
    else:
        table = {u: 1.0 for u in codes.HOUNSFIELD_UNITS}
    if unit.value in codes.PIXEL_UNITS or unit.value not in table:
        return None
    factor = Decimal(str(table[unit.value]))
    note = ""
    if unit.scheme_designator != codes.UCUM:
        note = f"unit ({unit.value}, {unit.scheme_designator}) read as UCUM {unit.value!r}"
    return _tidy(value * factor), note


def _tidy(value: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent notation (``10.00`` -> ``10``, exact)."""
    normal = value.normalize()
    if normal == normal.to_integral_value():
        return normal.quantize(Decimal(1))
    return normal


def _time_point(item: Dataset) -> TimePointContext | None:
    found: dict[str, Any] = {}
    for child in _children(item):
        concept = _concept(child)
        if matches(concept, codes.SUBJECT_TIME_POINT_IDENTIFIER):
            found["subject_time_point_identifier"] = _text_value(child)
        elif matches(concept, codes.PROTOCOL_TIME_POINT_IDENTIFIER):
            found["protocol_time_point_identifier"] = _text_value(child)
        elif matches(concept, codes.TIME_POINT):
            found["time_point"] = _text_value(child)
        elif matches(concept, codes.TIME_POINT_TYPE):
            found["time_point_type"] = _code_value(child)
        elif matches(concept, codes.TIME_POINT_ORDER):
            raw = _raw_numeric(child)
            with contextlib.suppress(InvalidOperation, ValueError):
                found["time_point_order"] = Decimal(raw) if raw is not None else None
    return TimePointContext(**found) if found else None


_NOT_EVALUATIONS = (
    codes.TRACKING_IDENTIFIER,
    codes.TRACKING_UID,
    codes.FINDING,
    codes.FINDING_CATEGORY,
    *codes.FINDING_SITES,
    *codes.MEASUREMENT_METHODS,
    *codes.TIME_POINT_CONTEXT_NAMES,
    codes.ACTIVITY_SESSION,
)


def _evaluations(item: Dataset) -> list[Evaluation]:
    out: list[Evaluation] = []
    for child in _children(item):
        vt = _get(child, "ValueType")
        concept = _concept(child)
        if concept is None or vt not in ("CODE", "TEXT") or matches(concept, _NOT_EVALUATIONS):
            continue
        if vt == "CODE":
            out.append(Evaluation(concept, code=_code_value(child)))
        else:
            out.append(Evaluation(concept, text=_text_value(child)))
    return out


def _measurement_sites(item: Dataset) -> list[Code]:
    """Finding sites given as modifiers of the NUMs (TID 1419 allows both places)."""
    sites: list[Code] = []
    for child in _children(item):
        if _get(child, "ValueType") != "NUM":
            continue
        for mod in _children(child):
            if matches(_concept(mod), codes.FINDING_SITES) and (c := _code_value(mod)) is not None:
                sites.append(c)
    return sites


def _group_references(
    item: Dataset, skip: Callable[[Dataset], bool] | None = None
) -> tuple[list[ImageRef], list[Region]]:
    """Images and regions under a group (bounded walk; stops at nested groups)."""
    images: list[ImageRef] = []
    regions: list[Region] = []
    stack = [(c, 1) for c in _children(item)]
    budget = 5_000
    while stack and budget > 0:
        budget -= 1
        child, depth = stack.pop()
        if skip is not None and skip(child):
            continue
        vt = _get(child, "ValueType")
        if vt in ("IMAGE", "COMPOSITE") and vt == "IMAGE":
            ref = _image_ref(child)
            if ref is not None:
                images.append(ref)
        elif vt in ("SCOORD", "SCOORD3D") and (r := _region(child)) is not None:
            regions.append(r)
            if r.image is not None:
                images.append(r.image)
        if depth < 8:
            stack.extend((c, depth + 1) for c in _children(child))
    return _unique(images), regions


def _references(num: Dataset) -> tuple[list[ImageRef], Region | None]:
    """Images and the region of one NUM (OHIF/dcmjs: NUM -INFERRED FROM-> SCOORD -SELECTED FROM-> IMAGE)."""
    images, regions = _group_references(num)
    return images, (regions[0] if regions else None)


def _references_of_region(roi: Any) -> tuple[list[ImageRef], Region | None]:
    if not isinstance(roi, Dataset):
        return [], None
    region = _region(roi)
    images, _ = _group_references(roi)
    if region is not None and region.image is not None:
        images = _unique([region.image, *images])
    return images, region


def _region(item: Dataset) -> Region | None:
    gtype = _str(_get(item, "GraphicType"))
    data = _get(item, "GraphicData")
    if gtype is None or data is None:
        return None
    try:
        values = data if isinstance(data, (list, tuple)) or hasattr(data, "__iter__") else [data]
        points = tuple(float(v) for v in values)[:4096]
    except (TypeError, ValueError):
        return None
    image = None
    for child in _children(item):
        if _get(child, "ValueType") == "IMAGE":
            image = _image_ref(child)
            break
    frame_of_ref = _str(_get(item, "ReferencedFrameOfReferenceUID"))
    return Region(gtype, points, image, frame_of_ref)


def _image_ref(item: Dataset) -> ImageRef | None:
    seq = _seq(item, "ReferencedSOPSequence")
    if not seq:
        return None
    uid = _str(_get(seq[0], "ReferencedSOPInstanceUID"))
    if uid is None:
        return None
    frames_raw = _get(seq[0], "ReferencedFrameNumber")
    frames: tuple[int, ...] = ()
    if frames_raw is not None:
        try:
            values = (
                frames_raw
                if isinstance(frames_raw, (list, tuple)) or hasattr(frames_raw, "__iter__")
                else [frames_raw]
            )
            frames = tuple(int(f) for f in values if str(f).strip())[:1024]
        except (TypeError, ValueError):
            frames = ()
    return ImageRef(_str(_get(seq[0], "ReferencedSOPClassUID")), uid, frames)


def _unique(images: Sequence[ImageRef]) -> list[ImageRef]:
    seen: list[ImageRef] = []
    for img in images:
        if img not in seen:
            seen.append(img)
    return seen


# --------------------------------------------------------------------------------------------------------
# Low-level accessors: tolerant of wrong value types and absent attributes


def _get(ds: Any, keyword: str) -> Any:
    if not isinstance(ds, Dataset):
        return None
    try:
        elem = ds.get(keyword)
    except Exception:
        return None
    return elem


def _seq(ds: Any, keyword: str) -> list[Dataset]:
    value = _get(ds, keyword)
    if isinstance(value, (DicomSequence, list)):
        return [v for v in value if isinstance(v, Dataset)]
    return []


def _children(ds: Any) -> list[Dataset]:
    return _seq(ds, "ContentSequence")


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = str(value).strip().strip("\x00").strip()
    return text or None


def _clean_text(value: Any) -> str | None:
    text = _str(value)
    return text[:1024] if text else None


def _code_from_item(item: Any) -> Code | None:
    if not isinstance(item, Dataset):
        return None
    value = (
        _str(_get(item, "CodeValue")) or _str(_get(item, "LongCodeValue")) or _str(_get(item, "URNCodeValue"))
    )
    scheme = _str(_get(item, "CodingSchemeDesignator"))
    if value is None or scheme is None:
        return None
    meaning = _str(_get(item, "CodeMeaning")) or ""
    try:
        return Code(value=value, scheme_designator=scheme, meaning=meaning)
    except Exception:
        return None


def _concept(item: Any) -> Code | None:
    seq = _seq(item, "ConceptNameCodeSequence")
    return _code_from_item(seq[0]) if seq else None


def _code_value(item: Any) -> Code | None:
    seq = _seq(item, "ConceptCodeSequence")
    return _code_from_item(seq[0]) if seq else None


def _unit(num: Any) -> Code | None:
    mv = _seq(num, "MeasuredValueSequence")
    if not mv:
        return None
    units = _seq(mv[0], "MeasurementUnitsCodeSequence")
    return _code_from_item(units[0]) if units else None


def _raw_numeric(num: Any) -> str | None:
    mv = _seq(num, "MeasuredValueSequence")
    if not mv:
        return None
    fp = _get(mv[0], "FloatingPointValue")
    if fp is not None and not isinstance(fp, (list, tuple)):
        try:
            return repr(float(fp))
        except (TypeError, ValueError):
            pass
    value = _get(mv[0], "NumericValue")
    if value is None:
        return None
    if type(value).__name__ == "MultiValue" or isinstance(value, (list, tuple)):
        value = value[0] if len(value) else None
    if value is None:
        return None
    original = getattr(value, "original_string", None)
    if isinstance(original, (str, bytes)) and original:
        return _str(original)
    return _str(value)


def _text_value(item: Any) -> str | None:
    vt = _get(item, "ValueType")
    if vt == "UIDREF":
        return _clean_text(_get(item, "UID"))
    return _clean_text(_get(item, "TextValue"))


def _checked_uid(uid: Any, warns: list[str]) -> str | None:
    text = _str(uid)
    if text is None:
        return None
    if len(text) > 64 or not _UID_RE.match(text):
        warns.append(f"Tracking UID {text[:70]!r} is not a valid UID; ignored")
        return None
    return text


def _as_code(value: Any) -> Code | None:
    if value is None:
        return None
    if isinstance(value, Code):
        return Code(value.value, value.scheme_designator, value.meaning)
    v = getattr(value, "value", None)
    scheme = getattr(value, "scheme_designator", None)
    if isinstance(v, str) and isinstance(scheme, str):
        return Code(v, scheme, str(getattr(value, "meaning", "") or ""))
    return None


def _code_label(code: Code) -> str:
    return f"({code.value}, {code.scheme_designator}, {code.meaning!r})"


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return text[:160] + ("..." if len(text) > 160 else "")
