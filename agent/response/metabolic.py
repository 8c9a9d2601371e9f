"""Metabolic response on FDG PET/CT (docs/criteria.md §13.3): PERCIST 1.0 when SULpeak is available, else
EORTC 1999 on SUVmax normalised to body weight (the fallback is stated in every result).

The baseline PET is the latest on or before treatment start (else the first PET); each later PET is
compared with it:

* PERCIST 1.0 (Wahl 2009): the SULpeak of the hottest lesion at each scan (not necessarily the same
  lesion). CMR: every lesion gone (or below the liver reference when one is given) and no new lesion; PMD:
  >= +30 % and >= +0.8 SUL, or a new FDG-avid lesion; PMR: >= -30 % and >= 0.8 SUL lower; else SMD.
* EORTC 1999 (Young 1999): the sum of SUVmax over the lesions of the baseline PET, tracked by id (a lesion
  gone counts 0). CMR: every lesion gone and no new lesion; PMD: > +25 % or a new FDG-avid lesion; PMR:
  > -25 % (the threshold after more than one cycle); else SMD.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

from agent.response.model import Day, PetLesion, PetScan, Timeline

HUNDRED = Decimal(100)
PERCIST_FRACTION = Decimal("0.30")
PERCIST_ABSOLUTE = Decimal("0.8")
PERCIST_LIVER_FACTOR = Decimal("1.5")
EORTC_FRACTION = Decimal("0.25")

PERCIST = "PERCIST 1.0"
EORTC = "EORTC 1999"
PERCIST_CITATION = "Wahl RL et al. J Nucl Med 2009;50 Suppl 1:122S-150S (PERCIST 1.0)"
EORTC_CITATION = "Young H et al. Eur J Cancer 1999;35:1773-1782 (EORTC PET response criteria)"


FALLBACK = (
    "SULpeak is not available for every lesion at both PETs, so EORTC 1999 on SUVmax (body weight) is used "
    "instead of PERCIST 1.0"
)


class MetabolicCategory(StrEnum):
    CMR = "CMR"
    PMR = "PMR"
    SMD = "SMD"
    PMD = "PMD"
    NE = "NE"


RESPONDING = (MetabolicCategory.CMR, MetabolicCategory.PMR)


@dataclass(frozen=True, slots=True)
class MetabolicResult:
    """One follow-up PET against the baseline PET."""

    pet_index: int
    date: Day
    baseline_date: Day
    method: str  # PERCIST 1.0 or EORTC 1999
    category: MetabolicCategory
    rule: str
    citation: str
    quantity: str = ""  # "SULpeak of the hottest lesion" / "sum of SUVmax (body weight)"
    baseline_value: Decimal | None = None
    current_value: Decimal | None = None
    change_pct: Decimal | None = None
    fallback: str | None = None  # why PERCIST could not be used


def baseline_pet_index(timeline: Timeline) -> int | None:
    if not timeline.pet:
        return None
    start = timeline.context.treatment_start
    index = 0
    if start is not None:
        for i, scan in enumerate(timeline.pet):
            if scan.date <= start:
                index = i
    return index


def _fmt(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')).normalize():f}"


def _pct(value: Decimal, reference: Decimal) -> Decimal | None:
    return None if reference == 0 else (value - reference) * HUNDRED / reference


def _hottest_sul(scan: PetScan) -> Decimal | None:
    """The SULpeak of the hottest lesion present; 0 when every lesion is gone; None when one lacks it."""
    values: list[Decimal] = []
    for lesion in scan.lesions:
        if lesion.absent:
            continue
        if lesion.sul_peak is None:
            return None
        values.append(lesion.sul_peak)
    return max(values, default=Decimal(0))


def _all_gone(scan: PetScan) -> bool:
    return all(lesion.absent for lesion in scan.lesions)


def percist(base: PetScan, scan: PetScan, index: int) -> MetabolicResult | None:
    """PERCIST 1.0, or None when SULpeak is not available at both scans."""
    b, c = _hottest_sul(base), _hottest_sul(scan)
    if b is None or c is None or not base.lesions:
        return None
    common = MetabolicResult(
        pet_index=index,
        date=scan.date,
        baseline_date=base.date,
        method=PERCIST,
        category=MetabolicCategory.NE,
        rule="",
        citation=PERCIST_CITATION,
        quantity="SULpeak of the hottest lesion",
        baseline_value=b,
        current_value=c,
        change_pct=_pct(c, b),
    )
    figures = f"SULpeak {_fmt(c)} vs {_fmt(b)} at the baseline PET ({base.date})"
    if b == 0:
        return replace(common, category=MetabolicCategory.NE, rule="no FDG-avid lesion at the baseline PET")
    note = ""
    if base.liver_sul_mean is not None and b < PERCIST_LIVER_FACTOR * base.liver_sul_mean:
        note = (
            f"; the hottest baseline lesion is below 1.5 x the liver SULmean {_fmt(base.liver_sul_mean)}, so "
            "it is not measurable under PERCIST"
        )
    if scan.new_lesions:
        return replace(
            common,
            category=MetabolicCategory.PMD,
            rule=f"PMD: new FDG-avid lesion(s) {', '.join(scan.new_lesions)}; {figures}{note}",
        )
    below_liver = scan.liver_sul_mean is not None and c < scan.liver_sul_mean
    if _all_gone(scan) or below_liver:
        why = (
            "every lesion gone"
            if _all_gone(scan)
            else f"below the liver SULmean {_fmt(scan.liver_sul_mean or Decimal(0))}"
        )
        return replace(common, category=MetabolicCategory.CMR, rule=f"CMR: {why}; {figures}{note}")
    if c >= b * (1 + PERCIST_FRACTION) and c - b >= PERCIST_ABSOLUTE:
        category, rule = MetabolicCategory.PMD, "PMD: a rise of >= 30 % and >= 0.8 SUL"
    elif c <= b * (1 - PERCIST_FRACTION) and b - c >= PERCIST_ABSOLUTE:
        category, rule = MetabolicCategory.PMR, "PMR: a fall of >= 30 % and >= 0.8 SUL"
    else:
        category, rule = (
            MetabolicCategory.SMD,
            "SMD: neither PMR (-30 % and -0.8 SUL) nor PMD (+30 % and +0.8 SUL)",
        )
    return replace(common, category=category, rule=f"{rule}; {figures}{note}")


def _suv_value(lesion: PetLesion | None) -> Decimal | None:
    if lesion is None:
        return None
    if lesion.absent:
        return Decimal(0)
    return lesion.suv_max


def eortc(base: PetScan, scan: PetScan, index: int, fallback: str) -> MetabolicResult:
    """EORTC 1999 on the sum of SUVmax (body weight) over the baseline lesions."""
    current = {lesion.id: lesion for lesion in scan.lesions}
    b_values = [_suv_value(lesion) for lesion in base.lesions]
    c_values = [_suv_value(current.get(lesion.id)) for lesion in base.lesions]
    common = MetabolicResult(
        pet_index=index,
        date=scan.date,
        baseline_date=base.date,
        method=EORTC,
        category=MetabolicCategory.NE,
        rule="",
        citation=EORTC_CITATION,
        quantity="sum of SUVmax (body weight)",
        fallback=fallback,
    )
    missing = [lesion.id for lesion, v in zip(base.lesions, c_values, strict=True) if v is None]
    if not base.lesions or any(v is None for v in b_values):
        return replace(
            common, category=MetabolicCategory.NE, rule="no SUVmax for every lesion of the baseline PET"
        )
    b = sum((v for v in b_values if v is not None), Decimal(0))
    if scan.new_lesions:
        return replace(
            common,
            category=MetabolicCategory.PMD,
            rule=f"PMD: new FDG-avid lesion(s) {', '.join(scan.new_lesions)}",
            baseline_value=b,
        )
    if missing:
        return replace(
            common,
            category=MetabolicCategory.NE,
            rule=f"no SUVmax for baseline lesion(s) {', '.join(missing)} at this PET",
            baseline_value=b,
        )
    c = sum((v for v in c_values if v is not None), Decimal(0))
    change = _pct(c, b)
    figures = f"sum of SUVmax {_fmt(c)} vs {_fmt(b)} at the baseline PET ({base.date})"
    common = replace(common, baseline_value=b, current_value=c, change_pct=change)
    if b == 0:
        return replace(common, category=MetabolicCategory.NE, rule="no uptake at the baseline PET")
    if _all_gone(scan):
        category, rule = MetabolicCategory.CMR, "CMR: complete resolution of FDG uptake"
    elif c > b * (1 + EORTC_FRACTION):
        category, rule = MetabolicCategory.PMD, "PMD: a rise of more than 25 %"
    elif c < b * (1 - EORTC_FRACTION):
        category, rule = MetabolicCategory.PMR, "PMR: a fall of more than 25 % (after more than one cycle)"
    else:
        category, rule = MetabolicCategory.SMD, "SMD: neither a fall nor a rise of more than 25 %"
    return replace(common, category=category, rule=f"{rule}; {figures}")


def assess(timeline: Timeline) -> tuple[MetabolicResult, ...]:
    """One result per follow-up PET (after the baseline PET)."""
    b = baseline_pet_index(timeline)
    if b is None:
        return ()
    base = timeline.pet[b]
    out: list[MetabolicResult] = []
    for i in range(b + 1, len(timeline.pet)):
        scan = timeline.pet[i]
        result = percist(base, scan, i)
        if result is None:
            result = eortc(
                base,
                scan,
                i,
                FALLBACK,
            )
        out.append(result)
    return tuple(out)
