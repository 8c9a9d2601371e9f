"""Serum tumour markers beside the imaging response (docs/criteria.md §13.2).

For every marker of the patient and every follow-up scan: the result that counts for the scan (taken at most
``marker_window_days`` before it or ``marker_after_days`` after it), the pre-treatment value (the latest
result on or before treatment start, else on or before the baseline scan, at most ``marker_window_days``
before it) and the nadir (the lowest value from the pre-treatment one up to the result before the current).

* marker progression: >= +25 % over the nadir and above the upper limit of normal (ULN);
* marker response: <= -50 % from the pre-treatment value, the pre-treatment value being >= 2 x ULN when a
  ULN is known (GCIG CA-125 response, Rustin 2004/2011);
* otherwise stable; not evaluable without a pre-treatment value, without a result near the scan, or when
  the unit changed.

The category never changes a response; the alert rules compare it with RECIST 1.1. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum

from agent.response.model import Day, Marker, MarkerResult, Timeline

HUNDRED = Decimal(100)
RESPONSE_FRACTION = Decimal("0.5")  # value <= 50 % of pre-treatment (a fall of >= 50 %)
PROGRESSION_FACTOR = Decimal("1.25")  # value >= 125 % of the nadir (a rise of >= 25 %)
EVALUABLE_ULN_FACTOR = Decimal(2)  # GCIG: the pre-treatment value must be >= 2 x ULN for a response

RESPONSE_CITATION = (
    "Rustin GJS et al. J Natl Cancer Inst 2004;96:487-488; Rustin GJS et al. Int J Gynecol Cancer "
    "2011;21:419-423 (GCIG CA-125 response: >= 50 % fall from a pre-treatment value >= 2 x ULN)"
)
PROGRESSION_CITATION = (
    "Scher HI et al. J Clin Oncol 2008;26:1148-1159 (PCWG2: >= 25 % rise over the nadir); "
    "Locker GY et al. J Clin Oncol 2006;24:5313-5327 (ASCO 2006 tumour markers in GI cancer)"
)

#: Units that mean the same number (compared in lower case without spaces).
_SAME_UNITS = (
    frozenset({"ng/ml", "ug/l", "µg/l", "μg/l", "mcg/l"}),
    frozenset({"u/ml", "ku/l"}),
    frozenset({"iu/ml", "kiu/l"}),
    frozenset({"nmol/l"}),
)


def unit_key(unit: str) -> str:
    """A unit's comparison key: ``ng/mL`` and ``µg/L`` are the same number."""
    key = unit.strip().lower().replace(" ", "")
    for group in _SAME_UNITS:
        if key in group:
            return min(group)
    return key


class MarkerCategory(StrEnum):
    RESPONSE = "response"
    PROGRESSION = "progression"
    STABLE = "stable"
    NOT_EVALUABLE = "not_evaluable"


@dataclass(frozen=True, slots=True)
class MarkerStatus:
    """One marker at one follow-up scan, with the figures behind its category."""

    index: int
    marker: Marker
    category: MarkerCategory
    rule: str
    citation: str = ""
    value: Decimal | None = None
    date: Day | None = None
    unit: str | None = None
    pretreatment: Decimal | None = None
    pretreatment_date: Day | None = None
    nadir: Decimal | None = None
    nadir_date: Day | None = None
    upper_limit: Decimal | None = None
    change_vs_pretreatment_pct: Decimal | None = None
    change_vs_nadir_pct: Decimal | None = None


@dataclass(frozen=True, slots=True)
class MarkerSeries:
    """Every result of one marker (date order) and its status at each time point (``None`` at the baseline
    and before it)."""

    marker: Marker
    unit: str
    results: tuple[MarkerResult, ...]
    statuses: tuple[MarkerStatus | None, ...]

    def at(self, t: int) -> MarkerStatus | None:
        return self.statuses[t] if 0 <= t < len(self.statuses) else None


def _pct(value: Decimal, reference: Decimal) -> Decimal | None:
    return None if reference == 0 else (value - reference) * HUNDRED / reference


def _fmt(value: Decimal) -> str:
    return f"{value.normalize():f}"


def reference_date(timeline: Timeline) -> date:
    """The day the pre-treatment value is taken on or before: treatment start, else the baseline scan."""
    start = timeline.context.treatment_start
    return start if start is not None else timeline.baseline.date


def status_at(timeline: Timeline, results: tuple[MarkerResult, ...], t: int) -> MarkerStatus:
    """The category of one marker at follow-up ``t`` (``results``: one marker, date order)."""
    marker = results[0].marker
    options = timeline.options
    window = timedelta(days=options.marker_window_days)
    ref = reference_date(timeline)
    scan = timeline.timepoints[t].date
    before = [r for r in results if ref - window <= r.date <= ref]
    if not before:
        return MarkerStatus(
            t,
            marker,
            MarkerCategory.NOT_EVALUABLE,
            f"no pre-treatment {marker.value} within {options.marker_window_days} days before {ref}",
        )
    pre = before[-1]
    near = [
        r
        for r in results
        if r.date > ref and scan - window <= r.date <= scan + timedelta(days=options.marker_after_days)
    ]
    if not near:
        return MarkerStatus(
            t,
            marker,
            MarkerCategory.NOT_EVALUABLE,
            f"no {marker.value} result after treatment start within {options.marker_window_days} days "
            f"before or {options.marker_after_days} days after the scan of {scan}",
            pretreatment=pre.value,
            pretreatment_date=pre.date,
        )
    current = near[-1]
    base = MarkerStatus(
        t,
        marker,
        MarkerCategory.NOT_EVALUABLE,
        "",
        value=current.value,
        date=current.date,
        unit=current.unit,
        pretreatment=pre.value,
        pretreatment_date=pre.date,
        upper_limit=current.upper_limit if current.upper_limit is not None else pre.upper_limit,
    )
    if unit_key(current.unit) != unit_key(pre.unit):
        return _replace(base, rule=f"the unit changed ({pre.unit} before treatment, {current.unit} now)")
    unit = unit_key(pre.unit)
    earlier = [r for r in results if pre.date <= r.date < current.date and unit_key(r.unit) == unit]
    low = min(earlier or [pre], key=lambda r: (r.value, r.date))
    uln = base.upper_limit
    base = _replace(
        base,
        nadir=low.value,
        nadir_date=low.date,
        change_vs_pretreatment_pct=_pct(current.value, pre.value),
        change_vs_nadir_pct=_pct(current.value, low.value),
    )
    rising = current.value >= PROGRESSION_FACTOR * low.value and current.value > low.value
    if rising and uln is not None and current.value > uln:
        return _replace(
            base,
            category=MarkerCategory.PROGRESSION,
            rule=f"{marker.value} progression: {_fmt(current.value)} {current.unit} is >= +25 % over the "
            f"nadir {_fmt(low.value)} ({low.date}) and above the ULN {_fmt(uln)}",
            citation=PROGRESSION_CITATION,
        )
    if rising and uln is None:
        return _replace(
            base,
            rule=f"{marker.value} rose >= 25 % over the nadir {_fmt(low.value)} but the result has no "
            "reference range, so progression (which needs a value above the ULN) cannot be stated",
        )
    evaluable = uln is None or pre.value >= EVALUABLE_ULN_FACTOR * uln
    if current.value <= RESPONSE_FRACTION * pre.value:
        if not evaluable and uln is not None:
            return _replace(
                base,
                category=MarkerCategory.STABLE,
                rule=f"{marker.value} fell >= 50 % but the pre-treatment value {_fmt(pre.value)} was below "
                f"2 x ULN ({_fmt(EVALUABLE_ULN_FACTOR * uln)}), so it is not a marker response",
                citation=RESPONSE_CITATION,
            )
        return _replace(
            base,
            category=MarkerCategory.RESPONSE,
            rule=f"{marker.value} response: {_fmt(current.value)} {current.unit} is <= -50 % from the "
            f"pre-treatment {_fmt(pre.value)} ({pre.date})",
            citation=RESPONSE_CITATION,
        )
    return _replace(
        base,
        category=MarkerCategory.STABLE,
        rule=f"{marker.value} {_fmt(current.value)} {current.unit}: neither -50 % from the pre-treatment "
        f"{_fmt(pre.value)} nor +25 % over the nadir {_fmt(low.value)} above the ULN",
        citation=f"{RESPONSE_CITATION}; {PROGRESSION_CITATION}",
    )


def _replace(status: MarkerStatus, **changes: object) -> MarkerStatus:
    fields = {name: getattr(status, name) for name in MarkerStatus.__dataclass_fields__}
    fields.update(changes)
    return MarkerStatus(**fields)


def assess(timeline: Timeline) -> tuple[MarkerSeries, ...]:
    """Every marker series of the timeline with its status at each follow-up (Marker enum order)."""
    out: list[MarkerSeries] = []
    n = len(timeline.timepoints)
    for marker in Marker:
        results = tuple(r for r in timeline.markers if r.marker is marker)
        if not results:
            continue
        statuses: list[MarkerStatus | None] = [None] * n
        for t in timeline.followups:
            statuses[t] = status_at(timeline, results, t)
        out.append(MarkerSeries(marker, results[-1].unit, results, tuple(statuses)))
    return tuple(out)
