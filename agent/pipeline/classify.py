"""Classification and context: is a study a liver follow-up, which patient context and criteria apply, and
what the image headers say about a measured series.

* :func:`classify`: the study is a liver follow-up when one of its image series of an accepted modality
  matches the body-part or description patterns (study or series description), or its Procedure Code
  Sequence holds a configured code, and is not excluded. A study holding no image at all (only SRs, e.g.
  priors we retrieved) is not one.
* :func:`choose_context`: the patient's primary tumour and therapy come from the first rule of
  ``pipeline.assess.rules`` whose ``match`` patterns all match the patient / study attributes; else, with
  ``detect_from_study``, words in the study's own text (Study Description, Admitting Diagnoses, Reason for
  the Requested Procedure); else the defaults. The criteria then follow ``agent.response.selection`` (the
  clinical choice), unless the rule lists its criteria explicitly.
* :func:`files_lookup`: what the given image files say about the measured images (the SR reader's
  ``SeriesLookup``), and their pixels for the mean HU a measurement lacks.

Reads DICOM headers only; no database, no network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pydicom

from agent.config import AssessSettings, ClassifySettings
from agent.response.model import Context, Criterion
from agent.response.selection import default_criteria, primary_in_text, therapy_in_text
from agent.sr.context import SeriesInfo
from agent.sr.context import series_info as context_series_info
from agent.sr.density import Density, DensityError, Outline, measure

__all__ = [
    "SeriesFacts",
    "choose_context",
    "classify",
    "default_criteria",
    "files_lookup",
    "read_series_facts",
]

_HEADER_TAGS = [
    "StudyDescription",
    "SeriesDescription",
    "BodyPartExamined",
    "ProcedureCodeSequence",
    "AdmittingDiagnosesDescription",
    "RequestAttributesSequence",
    "ClinicalTrialProtocolID",
    "IssuerOfPatientID",
    "AccessionNumber",
    "SliceThickness",
    "ContrastBolusAgent",
    "ContrastBolusRoute",
    "Modality",
]


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    series_uid: str
    modality: str
    body_part: str
    study_description: str
    series_description: str
    procedure_codes: tuple[str, ...]
    attributes: dict[str, str]
    slice_thickness_mm: str | None
    contrast_agent: str | None
    contrast_route: str | None


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "") if ds is not None else ""
    if isinstance(value, pydicom.multival.MultiValue | list):
        return " ".join(str(v) for v in value)
    return str(value or "")


def read_series_facts(path: Path, series_uid: str, modality: str) -> SeriesFacts:
    """The classification and context attributes of a series, from the header of one of its files."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception:  # an unreadable file classifies on what the index knows
        ds = None
    codes: list[str] = []
    for item in (ds.get("ProcedureCodeSequence", []) if ds is not None else []) or []:
        value = str(item.get("CodeValue", "") or "")
        scheme = str(item.get("CodingSchemeDesignator", "") or "")
        if value:
            codes += [value, f"{scheme}:{value}"]
    reason = ""
    for item in (ds.get("RequestAttributesSequence", []) if ds is not None else []) or []:
        reason += " " + _text(item, "ReasonForTheRequestedProcedure")
        reason += " " + _text(item, "RequestedProcedureDescription")
    attrs = {
        "study_description": _text(ds, "StudyDescription"),
        "admitting_diagnoses": _text(ds, "AdmittingDiagnosesDescription"),
        "reason_for_procedure": reason.strip(),
        "clinical_trial_protocol_id": _text(ds, "ClinicalTrialProtocolID"),
        "accession_number": _text(ds, "AccessionNumber"),
        "procedure_code": " ".join(codes),
    }
    thickness = _text(ds, "SliceThickness") or None
    return SeriesFacts(
        series_uid=series_uid,
        modality=(_text(ds, "Modality") or modality or "").upper(),
        body_part=_text(ds, "BodyPartExamined"),
        study_description=attrs["study_description"],
        series_description=_text(ds, "SeriesDescription"),
        procedure_codes=tuple(codes),
        attributes=attrs,
        slice_thickness_mm=thickness,
        contrast_agent=_text(ds, "ContrastBolusAgent") or None,
        contrast_route=_text(ds, "ContrastBolusRoute") or None,
    )


def _search(pattern: str, text: str) -> bool:
    return bool(pattern) and bool(text) and re.search(pattern, text, re.IGNORECASE) is not None


def classify(series: Sequence[SeriesFacts], rules: ClassifySettings) -> tuple[bool, str]:
    """(liver follow-up?, reason)."""
    modalities = {m.upper() for m in rules.modalities}
    images = [s for s in series if s.modality in modalities]
    if not images:
        return False, "no image series of an accepted modality"
    codes = set(rules.procedure_codes)
    for s in images:
        descriptions = f"{s.study_description} {s.series_description}"
        if _search(rules.exclude_pattern, descriptions):
            continue
        if codes and codes.intersection(s.procedure_codes):
            return True, "procedure code"
        if _search(rules.body_part_pattern, s.body_part.replace("_", " ")):
            return True, "body part"
        if _search(rules.description_pattern, descriptions):
            return True, "description"
    return False, "no series matches the liver follow-up rules"


def choose_context(attrs: dict[str, str], settings: AssessSettings) -> Context:
    """The patient's primary, therapy and criteria from the config rules, the study's text or defaults."""
    primary: str | None = None
    therapy: list[str] | None = None
    start: date | None = None
    explicit: list[str] | None = None
    for rule in settings.rules:
        if all(_search(pattern, attrs.get(key, "")) for key, pattern in rule.match.items()):
            primary, therapy, explicit = rule.primary, rule.therapy, rule.criteria
            if rule.treatment_start:
                start = date.fromisoformat(rule.treatment_start)
            break
    text = " ".join(
        attrs.get(k, "") for k in ("study_description", "admitting_diagnoses", "reason_for_procedure")
    )
    if settings.detect_from_study:
        if primary is None:
            primary = primary_in_text(text)
        if therapy is None:
            therapy = therapy_in_text(text, settings.immunotherapy) or None
    primary = primary or settings.default_primary
    therapy = therapy if therapy is not None else list(settings.default_therapy)
    if explicit:
        criteria = tuple(dict.fromkeys(Criterion(c) for c in explicit))
    else:
        criteria = default_criteria(primary, therapy, settings.immunotherapy)
    return Context(treatment_start=start, primary=primary, therapy=tuple(therapy), criteria=criteria)


class FilesLookup:
    """The SR reader's series lookup over image files (``liver-agent sr assess --images``): each image's own
    header (``agent.sr.context.series_info``), its series' first header for images not given, and the
    pixels of the given CT images for the mean HU a measurement lacks (``agent.sr.density.PixelSource``)."""

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self.by_sop: dict[str, tuple[Path, SeriesInfo]] = {}
        self.by_series: dict[str, SeriesInfo] = {}
        for given in paths:
            path = Path(given)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as exc:
                raise ValueError(f"{path}: not a readable DICOM file") from exc
            info = context_series_info(ds, "index")
            if not info.series_uid:
                raise ValueError(f"{path}: no Series Instance UID")
            self.by_sop[str(ds.get("SOPInstanceUID", "") or "")] = (path, info)
            self.by_series.setdefault(info.series_uid, info)

    def __call__(
        self, study_uid: str | None, series_uid: str | None, sop_instance_uid: str | None
    ) -> SeriesInfo | None:
        if sop_instance_uid and sop_instance_uid in self.by_sop:
            return self.by_sop[sop_instance_uid][1]
        return self.by_series.get(series_uid) if series_uid else None

    def measure_density(self, where: Outline) -> Density:
        found = self.by_sop.get(where.sop_instance_uid)
        if found is None:
            raise DensityError("the image is not among the given images")
        return measure(found[0], where)


def files_lookup(paths: Iterable[str | Path]) -> FilesLookup:
    """A series lookup over image files (see :class:`FilesLookup`)."""
    return FilesLookup(paths)
