"""Metabolic measurements of a PET measurement SR (TID 1500, as dcmqi writes them) as a ``PetScan``
(docs/criteria.md §13.3): per measurement group (one lesion), SUVmax and SUVpeak normalised to body weight,
SULmax and SULpeak (SUV normalised to lean body mass) where present, and the volume in ml.

A SUV is a NUM whose concept is a SUV (DCM 126400-126406) or whose unit is a UCUM ``{SUV...}g/ml``; the
derivation (DCM 121401) tells Maximum from Peak Value Within ROI. Pure (no I/O): reads an ``SRReport``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydicom.sr.coding import Code

from agent.response.model import PetLesion, PetScan
from agent.sr.codes import matches
from agent.sr.read import Measurement, MeasurementKind, SRReport

SUV_BW = (Code("126401", "DCM", "SUVbw"), Code("126400", "DCM", "Standardized Uptake Value"))
SUV_LBM = (Code("126402", "DCM", "SUVlbm"), Code("126405", "DCM", "SUVlbm(James128)"),
           Code("126406", "DCM", "SUVlbm(Janma)"))  # fmt: skip
MAXIMUM = (Code("56851009", "SCT", "Maximum"), Code("G-A437", "SRT", "Maximum"))
PEAK = (Code("126031", "DCM", "Peak Value Within ROI"),)


def _kind(m: Measurement) -> str | None:
    """``bw`` for SUV body weight, ``lbm`` for SUL, None for anything else."""
    unit = (m.raw_unit.value if m.raw_unit is not None else m.unit or "").lower()
    if matches(m.name, SUV_LBM) or "{suvlbm" in unit or "{sul" in unit:
        return "lbm"
    if matches(m.name, SUV_BW) or "{suvbw" in unit or unit.startswith("{suv}"):
        return "bw"
    return None


def _organ(report_group_sites: tuple[Code, ...]) -> str:
    if not report_group_sites:
        return "unknown"
    meaning = str(report_group_sites[0].meaning or report_group_sites[0].value).lower()
    return meaning.replace(" ", "_")


def pet_scan(report: SRReport, day: date) -> PetScan | None:
    """The lesions' SUV measurements of ``report`` on ``day``; None when no group carries a SUV."""
    lesions: list[PetLesion] = []
    for n, group in enumerate(report.groups):
        values: dict[str, Decimal] = {}
        for m in group.measurements:
            kind = _kind(m)
            if kind is None:
                continue
            if matches(m.derivation, MAXIMUM):
                values.setdefault(f"{kind}_max", m.value)
            elif matches(m.derivation, PEAK):
                values.setdefault(f"{kind}_peak", m.value)
        if not values:
            continue
        volume = group.first(MeasurementKind.VOLUME)
        lesions.append(
            PetLesion(
                id=group.tracking_uid or group.tracking_identifier or f"group{n + 1}",
                organ=_organ(group.finding_sites),
                suv_max=values.get("bw_max"),
                suv_peak=values.get("bw_peak"),
                sul_peak=values.get("lbm_peak"),
                sul_max=values.get("lbm_max"),
                volume_ml=None if volume is None else volume.value / 1000,  # mm3 -> ml
            )
        )
    if not lesions:
        return None
    return PetScan(date=day, lesions=tuple(lesions))
