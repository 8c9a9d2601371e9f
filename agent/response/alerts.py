"""Alert rules of docs/criteria.md §9: discordance between criteria, ancillary signs, comparability and
data quality.

``evaluate(timeline, results)`` runs after every criterion and reads the timeline and the results; it never
changes a response (the alert is the explanation). Every alert carries its code, severity, time point index,
one sentence a radiologist can act on, and the citation of the rule. Alerts are keyed ``(code, timepoint)``:
several findings of one code at one time point are merged into one alert. Discordance alerts (``DISC_*``)
fire only for criteria listed in ``context.criteria``. Never imports anything but the standard library and
``agent.response``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from agent.response import choi, morphology, recist
from agent.response.markers import MarkerCategory, MarkerSeries, MarkerStatus
from agent.response.markers import assess as assess_markers
from agent.response.metabolic import RESPONDING, MetabolicResult
from agent.response.metabolic import assess as assess_metabolic
from agent.response.model import (
    SEVERITY_RANK,
    Alert,
    Category,
    Criterion,
    CriterionResult,
    Lesion,
    LesionKind,
    LesionStatus,
    Severity,
    Timeline,
    TimepointAssessment,
)
from agent.response.registry import Problem, Registry, build_registry
from agent.response.sites import EXTRAHEPATIC, LIVER, SiteStatus, SiteTimepoint, split

# --------------------------------------------------------------------------------------------------------
# Catalogue: code -> (default severity, citation)

_RECIST = "Eisenhauer EA et al. Eur J Cancer 2009;45:228-247 (RECIST 1.1)"
_RECIST_FAQ = "EORTC RECIST 1.1 FAQ (recist.eortc.org)"
_CHOI = "Choi H et al. J Clin Oncol 2007;25:1753-1759; Benjamin RS et al. J Clin Oncol 2007;25:1760-1764"
_CHUN = "Chun YS et al. JAMA 2009;302:2338-2344"
_ESGAR = "Dioguardi Burgio M, Ronot M, Vilgrain V. Eur Radiol 2025 (ESGAR ESR Essentials)"
_IRECIST = "Seymour L et al. Lancet Oncol 2017;18:e143-e152 (iRECIST); EORTC iRECIST FAQ"
_MRECIST = "Lencioni R, Llovet JM. Semin Liver Dis 2010;30:52-60 (mRECIST)"
_DISSOCIATED = (
    "Tazdait M et al. Eur J Cancer 2018;88:38-47 (dissociated response); "
    "Humbert O, Chardin D. Front Oncol 2020;10:566297"
)

_MARKER_RESPONSE = "Rustin GJS et al. J Natl Cancer Inst 2004;96:487-488 (GCIG CA-125 response)"
_MARKER_PROGRESSION = (
    "Scher HI et al. J Clin Oncol 2008;26:1148-1159 (PCWG2); Locker GY et al. J Clin Oncol 2006;24:5313-5327"
)

_PET = (
    "Wahl RL et al. J Nucl Med 2009;50 Suppl 1:122S-150S (PERCIST 1.0); Young H et al. Eur J Cancer "
    "1999;35:1773-1782 (EORTC)"
)


@dataclass(frozen=True, slots=True)
class AlertDefinition:
    code: str
    severity: Severity
    citation: str


def _defs(*rows: tuple[str, Severity, str]) -> dict[str, AlertDefinition]:
    return {code: AlertDefinition(code, severity, citation) for code, severity, citation in rows}


CATALOGUE: dict[str, AlertDefinition] = _defs(
    # 9.1 discordance and ancillary signs
    ("DISC_RECIST_PD_CHOI_PR", Severity.CRITICAL, _CHOI),
    ("DISC_RECIST_SD_CHOI_PR", Severity.WARNING, _CHOI),
    ("DISC_CHOI_PD_RECIST_NOT_PD", Severity.CRITICAL, _CHOI),
    ("DISC_RECIST_PD_CHUN_OPTIMAL", Severity.WARNING, f"{_CHUN}; {_ESGAR}"),
    ("DISC_RECIST_SD_CHUN_OPTIMAL", Severity.WARNING, _CHUN),
    ("DISC_RECIST_RESPONSE_CHUN_NONE", Severity.INFO, _CHUN),
    ("DISC_IRECIST_IUPD_RECIST_PD", Severity.WARNING, _IRECIST),
    ("DISC_PSEUDOPROGRESSION", Severity.INFO, _IRECIST),
    ("DISC_MRECIST_RECIST", Severity.INFO, _MRECIST),
    ("SITE_DISCORDANT_PROGRESSION", Severity.WARNING, f"{_DISSOCIATED}; {_ESGAR}"),
    ("SITE_LIVER_RESPONSE_EXTRAHEPATIC_PD", Severity.INFO, f"{_RECIST} §4.3.4 and Table 1"),
    ("MARKER_FALLING_RECIST_PD", Severity.WARNING, f"{_MARKER_RESPONSE}; {_DISSOCIATED}"),
    ("MARKER_RISING_RECIST_NOT_PD", Severity.WARNING, f"{_MARKER_PROGRESSION}; {_RECIST} §4.3.3"),
    ("METABOLIC_RESPONSE_RECIST_PD", Severity.WARNING, f"{_PET}; {_DISSOCIATED}"),
    ("ANC_ATTENUATION_DROP_SIZE_STABLE", Severity.WARNING, f"{_ESGAR}; {_CHOI}"),
    ("ANC_SIZE_UP_ATTENUATION_DOWN", Severity.WARNING, f"{_ESGAR}; {_CHOI}"),
    ("ANC_MORPHOLOGIC_RESPONSE_SIGNS", Severity.INFO, _ESGAR),
    # 9.2 comparability and data quality
    ("MODALITY_CHANGED", Severity.WARNING, f"{_RECIST}; {_CHOI}"),
    ("PHASE_MISMATCH", Severity.WARNING, f"{_CHOI}; {_RECIST} Appendix II"),
    ("CHOI_DENSITY_NOT_EVALUABLE", Severity.WARNING, f"{_CHOI} (density on portal venous contrast CT)"),
    ("CHUN_NOT_EVALUABLE_MODALITY", Severity.WARNING, f"{_CHUN}; {_ESGAR}"),
    ("SLICE_THICKNESS_GT_5MM", Severity.WARNING, f"{_RECIST} Appendix II"),
    ("TARGET_NOT_MEASURABLE_AT_BASELINE", Severity.CRITICAL, f"{_RECIST} §3.1 and Appendix II"),
    ("TARGET_LIMITS_EXCEEDED", Severity.CRITICAL, f"{_RECIST} §3.3; RECIST 1.1 Q&A (lymph nodes)"),
    ("LOCALLY_TREATED_TARGET", Severity.WARNING, f"{_RECIST} §3.1 (previously treated lesions)"),
    ("BASELINE_MISSING", Severity.CRITICAL, _RECIST),
    ("BASELINE_AFTER_TREATMENT_START", Severity.CRITICAL, f"{_RECIST} §3.2"),
    ("BASELINE_TOO_EARLY", Severity.WARNING, f"{_RECIST} §3.2 (within 4 weeks before treatment)"),
    ("NO_BASELINE_DISEASE", Severity.WARNING, _RECIST),
    ("BASELINE_TARGET_NOT_MEASURED", Severity.CRITICAL, f"{_RECIST} §4.3.1 (sum of diameters at baseline)"),
    ("TARGET_NOT_ASSESSED", Severity.WARNING, f"{_RECIST} §4.3; {_RECIST_FAQ}"),
    ("IMPLAUSIBLE_MEASUREMENT", Severity.CRITICAL, "project convention [P] (plausible range, cm/mm slip)"),
    ("LESION_RECORD_INCONSISTENT", Severity.CRITICAL, f"{_RECIST} §4.3.1 (coalesced, disappeared)"),
    ("LESION_TRACKING_MISMATCH", Severity.CRITICAL, f"{_RECIST}; DICOM TID 1500 tracking identifiers"),
    ("LESION_PAIRING_PROVISIONAL", Severity.WARNING, f"{_RECIST}; DICOM TID 1500 tracking identifiers"),
    ("NEW_LESION_PREVIOUSLY_SEEN", Severity.CRITICAL, f"{_RECIST} §4.3.2"),
    ("NEW_LESION_EQUIVOCAL", Severity.WARNING, f"{_RECIST} §4.3.2"),
    ("PD_DATE_BACKDATED", Severity.INFO, f"{_RECIST} §4.3.2"),
    ("REAPPEARANCE_AFTER_CR", Severity.WARNING, f"{_RECIST_FAQ} (reappearance after CR)"),
    ("BORDERLINE_THRESHOLD", Severity.INFO, "project convention [P] (measurement variability)"),
    ("INTERVAL_TOO_LONG", Severity.INFO, "project convention [P] (max_interval_days)"),
    ("IRECIST_CONFIRMATION_OUTSIDE_WINDOW", Severity.WARNING, _IRECIST),
    ("POST_PD_TIMEPOINT", Severity.INFO, f"{_RECIST} §4.4"),
    (
        "DLM_CT_DISAPPEARED_LIVER_LESION",
        Severity.INFO,
        f"{_ESGAR}; Auer RC et al. Cancer 2010;116:1502-1509 (disappearing liver metastases)",
    ),
    ("CRITERION_NOT_APPLICABLE", Severity.INFO, f"{_MRECIST}; Bruix J et al. J Hepatol 2001;35:421-430"),
    ("CRITERION_OUTSIDE_VALIDATED_SETTING", Severity.INFO, f"{_ESGAR}; {_CHOI}; {_CHUN}"),
)


def make_alert(code: str, timepoint: int | None, message: str, severity: Severity | None = None) -> Alert:
    """An alert of the catalogue, with its default severity unless the rule raises it."""
    definition = CATALOGUE[code]
    return Alert(code, timepoint, severity or definition.severity, message, definition.citation)


# --------------------------------------------------------------------------------------------------------
# What the rules look at


@dataclass(frozen=True, slots=True)
class Facts:
    """The timeline, the requested criteria and the results, shared by every rule (built once by ``facts``).

    ``categories[c]`` lists the categories of criterion ``c`` aligned with the time points (``None`` at the
    baseline); ``density_criterion`` is Choi when requested, else modified Choi: the criterion the Choi
    discordance rules compare.
    """

    timeline: Timeline
    results: dict[Criterion, CriterionResult]
    requested: frozenset[Criterion]
    registry: Registry
    categories: dict[Criterion, list[Category | None]]
    density_criterion: Criterion | None
    followups: range
    compared_criteria: frozenset[Criterion]  # requested in the context and computed
    sites: tuple[SiteTimepoint | None, ...] = ()  # the response split by site (§13)
    markers: tuple[MarkerSeries, ...] = ()  # tumour markers and their status per follow-up (§13.2)
    metabolic: tuple[MetabolicResult, ...] = ()  # metabolic response per follow-up PET (§13.3)

    def compared(self, *criteria: Criterion) -> bool:
        """Discordance rules need every criterion requested in the context and computed."""
        return self.compared_criteria.issuperset(criteria)

    def step(self, criterion: Criterion, t: int) -> TimepointAssessment | None:
        result = self.results.get(criterion)
        if result is None or t >= len(result.timepoints):
            return None
        return result.timepoints[t]

    def category(self, criterion: Criterion, t: int) -> Category | None:
        categories = self.categories.get(criterion)
        if categories is None or t >= len(categories):
            return None
        return categories[t]


def facts(timeline: Timeline, results: tuple[CriterionResult, ...]) -> Facts:
    """What every rule reads, computed once per assessment."""
    by_criterion = {result.criterion: result for result in results}
    requested = frozenset(timeline.context.criteria)
    density = None
    for criterion in (Criterion.CHOI, Criterion.MCHOI):
        if criterion in requested and criterion in by_criterion:
            density = criterion
            break
    registry = build_registry(timeline)
    return Facts(
        timeline=timeline,
        results=by_criterion,
        requested=requested,
        registry=registry,
        categories={c: result.categories() for c, result in by_criterion.items()},
        density_criterion=density,
        followups=timeline.followups,
        compared_criteria=requested.intersection(by_criterion),
        sites=split(timeline, registry),
        markers=assess_markers(timeline),
        metabolic=assess_metabolic(timeline),
    )


Rule = Callable[[Facts], Iterable[Alert]]


def _mm(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1')).normalize():f} mm"


def _pct(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value.quantize(Decimal('0.1')):+f} %"


def _ids(lesions: Iterable[str]) -> str:
    return ", ".join(lesions)


def _is_liver(lesion: Lesion) -> bool:
    return lesion.organ == "liver" or lesion.organ.strip().lower() == "liver"


def _organ_key(lesion: Lesion) -> str:
    """All lymph nodes form one organ for the "2 per organ" rule (RECIST Q&A)."""
    organ = lesion.organ.strip().lower()
    return "lymph_node" if lesion.is_node or organ in ("lymph_node", "lymph node") else organ


# --------------------------------------------------------------------------------------------------------
# Baseline (docs/criteria.md §2.1-§2.2)


def baseline_timing(f: Facts) -> Iterator[Alert]:
    """BASELINE_AFTER_TREATMENT_START, BASELINE_TOO_EARLY (more than 28 days before treatment start)."""
    start = f.timeline.context.treatment_start
    baseline = f.timeline.baseline
    b = f.timeline.baseline_index
    window = f.timeline.options.baseline_window_days
    if start is None:
        return
    days = (start - baseline.date).days
    if days < 0:
        yield make_alert(
            "BASELINE_AFTER_TREATMENT_START",
            b,
            f"The baseline scan ({baseline.date}) is {-days} days after treatment start ({start}), so it may "
            "already show treatment effect; responses are computed against it anyway.",
        )
    elif days > window:
        yield make_alert(
            "BASELINE_TOO_EARLY",
            b,
            f"The baseline scan ({baseline.date}) is {days} days before treatment start ({start}); RECIST "
            f"asks for one within {window} days, so growth before treatment may be counted as progression.",
        )


def evidence(f: Facts) -> Iterator[Alert]:
    """BASELINE_TARGET_NOT_MEASURED, IMPLAUSIBLE_MEASUREMENT and LESION_RECORD_INCONSISTENT
    (docs/criteria.md §1.8)."""
    registry = f.registry
    b = registry.baseline_index
    if registry.baseline_unmeasured:
        yield make_alert(
            "BASELINE_TARGET_NOT_MEASURED",
            b,
            f"Baseline target(s) {_ids(registry.baseline_unmeasured)} have no measured value, so the "
            "baseline sum is unknown and no size-based response (RECIST, iRECIST, Choi) can be stated; "
            "add the measurement.",
        )
    for t in range(b, len(f.timeline.timepoints)):
        problems = registry.problems_at(t)
        implausible = [p.detail for p in problems if p.problem in (Problem.IMPLAUSIBLE, Problem.UNIT_SLIP)]
        if implausible:
            what = "the baseline and every follow-up are" if t == b else "this time point is"
            yield make_alert(
                "IMPLAUSIBLE_MEASUREMENT",
                t,
                f"Implausible measurement ({'; '.join(implausible)}): {what} not assessed until the "
                "measurement is corrected.",
            )
        wrong = [p.detail for p in problems if p.problem is Problem.INCONSISTENT]
        if wrong:
            step = f.step(Criterion.RECIST, t)
            decisive = t == b or (step is not None and step.category is Category.NE)
            yield make_alert(
                "LESION_RECORD_INCONSISTENT",
                t,
                f"Lesion record contradicts itself ({'; '.join(wrong)}); the lesion is read as not assessed"
                + (
                    ", which leaves the response not evaluable."
                    if decisive
                    else ", and the response was decided without it."
                ),
                None if decisive else Severity.WARNING,
            )


def baseline_disease(f: Facts) -> Iterator[Alert]:
    """NO_BASELINE_DISEASE: no target and no non-target at baseline."""
    if not f.registry.targets and not f.registry.non_targets:
        yield make_alert(
            "NO_BASELINE_DISEASE",
            f.timeline.baseline_index,
            "No target or non-target lesion was recorded at baseline, so only new lesions (PD) can be "
            "assessed.",
        )


def measurability_threshold(lesion: Lesion, slice_thickness: Decimal | None) -> Decimal:
    """Minimum baseline size of a target: max(10, 2 × slice) mm long axis; nodes max(15, 2 × slice) short."""
    minimum = Decimal(15) if lesion.is_node else Decimal(10)
    if slice_thickness is not None and 2 * slice_thickness > minimum:
        return 2 * slice_thickness
    return minimum


def target_not_measurable(f: Facts) -> Iterator[Alert]:
    """TARGET_NOT_MEASURABLE_AT_BASELINE: a declared target below its measurability threshold."""
    baseline = f.timeline.baseline
    problems: list[str] = []
    for lesion in f.registry.targets:
        minimum = measurability_threshold(lesion, baseline.slice_thickness_mm)
        value = recist.target_value(lesion) if lesion.status is LesionStatus.MEASURED else None
        axis = "short axis" if lesion.is_node else "long axis"
        if value is None:
            problems.append(f"{lesion.id} has no measured {axis} (needs >= {_mm(minimum)})")
        elif value < minimum:
            problems.append(f"{lesion.id} {axis} {_mm(value)} < {_mm(minimum)}")
    if problems:
        yield make_alert(
            "TARGET_NOT_MEASURABLE_AT_BASELINE",
            f.timeline.baseline_index,
            f"Declared target(s) below the measurability threshold ({'; '.join(problems)}); the response is "
            "computed on the declared targets but is not RECIST-compliant.",
        )


def target_limits(f: Facts) -> Iterator[Alert]:
    """TARGET_LIMITS_EXCEEDED: more than 5 targets, or more than 2 in one organ (lymph nodes = one organ)."""
    targets = f.registry.targets
    problems: list[str] = []
    if len(targets) > 5:
        problems.append(f"{len(targets)} targets (maximum 5)")
    per_organ: dict[str, list[str]] = {}
    for lesion in targets:
        per_organ.setdefault(_organ_key(lesion), []).append(lesion.id)
    for organ, ids in per_organ.items():
        if len(ids) > 2:
            problems.append(f"{len(ids)} targets in {organ} ({_ids(ids)}; maximum 2)")
    if problems:
        yield make_alert(
            "TARGET_LIMITS_EXCEEDED",
            f.timeline.baseline_index,
            f"Target selection exceeds the RECIST limits ({'; '.join(problems)}); the response is computed "
            "on the declared targets but is not RECIST-compliant.",
        )


def locally_treated_targets(f: Facts) -> Iterator[Alert]:
    """LOCALLY_TREATED_TARGET: a baseline target previously ablated, embolised or irradiated."""
    treated = [lesion.id for lesion in f.registry.targets if lesion.locally_treated]
    if treated:
        yield make_alert(
            "LOCALLY_TREATED_TARGET",
            f.timeline.baseline_index,
            f"Target(s) {_ids(treated)} were treated locally before; such lesions are not measurable unless "
            "they progressed afterwards, so consider making them non-targets.",
        )


# --------------------------------------------------------------------------------------------------------
# Comparability (docs/criteria.md §9.2)


def slice_thickness(f: Facts) -> Iterator[Alert]:
    """SLICE_THICKNESS_GT_5MM at every time point reconstructed with slices thicker than 5 mm."""
    for t, tp in enumerate(f.timeline.timepoints):
        if t < f.timeline.baseline_index:
            continue
        st = tp.slice_thickness_mm
        if st is not None and st > 5:
            yield make_alert(
                "SLICE_THICKNESS_GT_5MM",
                t,
                f"Slices are {_mm(st)} thick: the minimum measurable size becomes {_mm(2 * st)} and small "
                "lesions are measured unreliably.",
            )


def modality_changed(f: Facts) -> Iterator[Alert]:
    """MODALITY_CHANGED: the follow-up modality differs from the baseline one."""
    base = f.timeline.baseline.modality
    for t in f.followups:
        now = f.timeline.timepoints[t].modality
        if base is None or now is None or base.strip().upper() == now.strip().upper():
            continue
        affected = [c.value for c in (Criterion.CHOI, Criterion.MCHOI, Criterion.CHUN) if c in f.requested]
        tail = f"; {', '.join(affected)} cannot be assessed (CT only)" if affected else ""
        yield make_alert(
            "MODALITY_CHANGED",
            t,
            f"Modality changed from {base} at baseline to {now}: measurements are less comparable and new "
            f"findings caused by the change are not unequivocal{tail}.",
        )


def phase_mismatch(f: Facts) -> Iterator[Alert]:
    """PHASE_MISMATCH: a target measured in another contrast phase than at baseline."""
    baseline = f.timeline.baseline
    targets = f.registry.targets
    baseline_phases = [baseline.lesion_phase(base) for base in targets]
    for t in f.followups:
        tp = f.timeline.timepoints[t]
        changed: list[str] = []
        for base, before, record in zip(targets, baseline_phases, f.registry.target_records[t], strict=True):
            if record is None:
                continue
            now = tp.lesion_phase(record)
            if before is not None and now is not None and before is not now:
                changed.append(f"{base.id} {before.value} -> {now.value}")
        if changed:
            yield make_alert(
                "PHASE_MISMATCH",
                t,
                f"Target(s) measured in another contrast phase than at baseline ({_ids(changed)}); size and "
                "especially attenuation depend on the phase.",
            )


def interval_too_long(f: Facts) -> Iterator[Alert]:
    """INTERVAL_TOO_LONG: more than ``max_interval_days`` since the previous time point [P]."""
    limit = f.timeline.options.max_interval_days
    tps = f.timeline.timepoints
    for t in f.followups:
        days = (tps[t].date - tps[t - 1].date).days
        if days > limit:
            yield make_alert(
                "INTERVAL_TOO_LONG",
                t,
                f"{days} days since the previous scan (more than {limit}): the nadir or the date of "
                "progression may be imprecise.",
            )


#: Statuses that report a lesion gone.
_REPORTED_GONE = frozenset({LesionStatus.DISAPPEARED, LesionStatus.ABSENT})


def _disappeared(lesion: Lesion) -> bool:
    """Reported gone: a target ``disappeared`` (or measured 0 mm), a non-target or new lesion ``absent``."""
    status = lesion.status
    if status in _REPORTED_GONE:
        return True
    return (
        status is LesionStatus.MEASURED
        and lesion.long_axis_mm == 0
        and lesion.kind is LesionKind.TARGET
        and not lesion.is_node
        and not lesion.fragments_mm
    )


def disappeared_liver_lesion(f: Facts) -> Iterator[Alert]:
    """DLM_CT_DISAPPEARED_LIVER_LESION: a liver lesion first reported disappeared/absent, on CT."""
    reported: set[str] = set()
    for t in f.followups:
        tp = f.timeline.timepoints[t]
        gone = [les for les in tp.lesions if _disappeared(les)]
        if not gone:
            continue
        first = [les.id for les in gone if les.id not in reported and _is_liver(les)]
        reported.update(les.id for les in gone)
        if first and choi.is_ct(tp):
            yield make_alert(
                "DLM_CT_DISAPPEARED_LIVER_LESION",
                t,
                f"Liver lesion(s) {_ids(first)} disappeared on CT; disappearing liver metastases often hold "
                "residual disease, so confirm with hepatobiliary-phase MRI and DWI before surgical planning.",
            )


# --------------------------------------------------------------------------------------------------------
# Tracking and lesion records (docs/criteria.md §1.3, §2.4, §2.7)


def tracking(f: Facts) -> Iterator[Alert]:
    """LESION_TRACKING_MISMATCH and NEW_LESION_PREVIOUSLY_SEEN from the lesion registry."""
    if not f.registry.problems:
        return
    mismatch = (Problem.UNKNOWN_ID, Problem.KIND_CHANGED, Problem.ORGAN_CHANGED)
    for t in f.followups:
        problems = f.registry.problems_at(t)
        wrong = [p.detail for p in problems if p.problem in mismatch]
        if wrong:
            yield make_alert(
                "LESION_TRACKING_MISMATCH",
                t,
                f"Lesion records do not match the baseline ({'; '.join(wrong)}); wrong pairing corrupts the "
                "sums and the nadir, so check the lesion identities.",
            )
        seen = [p.detail for p in problems if p.problem is Problem.PREVIOUSLY_SEEN]
        if seen:
            yield make_alert(
                "NEW_LESION_PREVIOUSLY_SEEN",
                t,
                f"A lesion labelled new was already present ({'; '.join(seen)}); it is not counted as a new "
                "lesion and does not trigger progression.",
            )


def equivocal_new(f: Facts) -> Iterator[Alert]:
    """NEW_LESION_EQUIVOCAL: an equivocal new lesion, to confirm at the next scan."""
    for t in f.followups:
        ids = [les.id for les in f.registry.equivocal_new(t)]
        if ids:
            yield make_alert(
                "NEW_LESION_EQUIVOCAL",
                t,
                f"Equivocal new lesion(s) {_ids(ids)}: not progression yet; if the next scan confirms it, "
                "progression is dated back to this scan.",
            )


def target_not_assessed(f: Facts) -> Iterator[Alert]:
    """TARGET_NOT_ASSESSED: a baseline target without a value at a follow-up."""
    for t in f.followups:
        step = f.step(Criterion.RECIST, t)
        if step is not None:
            missing = list(step.missing_targets)
        else:
            targets, records = f.registry.targets, f.registry.target_records[t]
            missing = [b.id for b, r in zip(targets, records, strict=True) if recist.target_value(r) is None]
        if missing:
            yield make_alert(
                "TARGET_NOT_ASSESSED",
                t,
                f"Target(s) {_ids(missing)} have no measurement here, so the sum is unknown and the response "
                "is NE unless progression is established otherwise.",
            )


# --------------------------------------------------------------------------------------------------------
# RECIST series (docs/criteria.md §2.7-§2.10)


def backdated_pd(f: Facts) -> Iterator[Alert]:
    """PD_DATE_BACKDATED: the final response differs from the provisional one (equivocal lesion confirmed)."""
    result = f.results.get(Criterion.RECIST)
    if result is None:
        return
    for step in result.timepoints:
        if step is None:
            continue
        provisional = step.provisional_category
        if step.backdated or (provisional is not None and provisional is not step.category):
            was = provisional.value if provisional is not None else "?"
            yield make_alert(
                "PD_DATE_BACKDATED",
                step.index,
                f"Reported {was} at the time, now {step.category.value}: the equivocal new lesion seen here "
                "was confirmed later, so progression is dated to this scan.",
            )


def reappearance_after_cr(f: Facts) -> Iterator[Alert]:
    """REAPPEARANCE_AFTER_CR: PD while the previous evaluable overall response was CR."""
    recist_categories = f.categories.get(Criterion.RECIST)
    if recist_categories is None:
        return
    previous: Category | None = None
    for t in f.followups:
        category = recist_categories[t]
        if category is None:
            return
        if category is Category.PD and previous is Category.CR:
            yield make_alert(
                "REAPPEARANCE_AFTER_CR",
                t,
                "Disease reappeared after a complete response, which is progression whatever its size; check "
                "that the earlier CR was genuine (the lesion may always have been there).",
            )
        if category is not Category.NE:
            previous = category


def post_pd(f: Facts) -> Iterator[Alert]:
    """POST_PD_TIMEPOINT: RECIST time points after the first PD."""
    result = f.results.get(Criterion.RECIST)
    if result is None or result.pd_index is None:
        return
    for t in range(result.pd_index + 1, len(f.timeline.timepoints)):
        yield make_alert(
            "POST_PD_TIMEPOINT",
            t,
            f"Scan after RECIST progression ({result.pd_date}): not part of the RECIST assessment; consider "
            "a new baseline if therapy changed.",
        )


_NO_SUM_TEST = frozenset({Category.CR, Category.NE, Category.NONE})
_ZERO, _FIVE, _TWENTY, _THIRTY, _HUNDRED = (Decimal(v) for v in (0, 5, 20, 30, 100))


def borderline(step: TimepointAssessment, pp: Decimal, mm: Decimal) -> str | None:
    """Which RECIST threshold the target sum is borderline to, if any [P] (docs/criteria.md §9.2).

    Within ``pp`` points of -30 % vs baseline; within ``pp`` points of +20 % vs nadir with an increase of
    at least ``5 - mm``; or at least ``20 - pp`` % above the nadir with an increase within ``mm`` of 5 mm.
    Cross-multiplied and inclusive; a zero nadir makes any increase infinite.
    """
    s, s0, n = step.sum_mm, step.baseline_sum_mm, step.nadir_sum_mm
    if s is None or s0 is None or n is None or step.target in _NO_SUM_TEST:
        return None
    if s0 > _ZERO and abs(_HUNDRED * (s - s0) + _THIRTY * s0) <= pp * s0:
        return f"{_pct(step.change_vs_baseline_pct)} vs baseline {_mm(s0)} is close to the -30 % PR threshold"
    increase = s - n
    if n > _ZERO and abs(_HUNDRED * increase - _TWENTY * n) <= pp * n and increase >= _FIVE - mm:
        return (
            f"{_pct(step.change_vs_nadir_pct)} (+{_mm(increase)}) vs nadir {_mm(n)} is close to the +20 % "
            "PD threshold"
        )
    relative = increase > _ZERO if n == _ZERO else _HUNDRED * increase >= (_TWENTY - pp) * n
    if relative and abs(increase - _FIVE) <= mm:
        return f"+{_mm(increase)} vs nadir {_mm(n)} is close to the 5 mm PD threshold"
    return None


def borderline_threshold(f: Facts) -> Iterator[Alert]:
    """BORDERLINE_THRESHOLD: measurement variability could flip the RECIST category [P]."""
    options = f.timeline.options
    for t in f.followups:
        step = f.step(Criterion.RECIST, t)
        why = borderline(step, options.borderline_pp, options.borderline_mm) if step is not None else None
        if step is not None and why is not None:
            yield make_alert(
                "BORDERLINE_THRESHOLD",
                t,
                f"Target sum {_mm(step.sum_mm or Decimal(0))}: {why}; measurement variability could change "
                f"the category ({step.target.value}), so a second read is suggested.",
            )


# --------------------------------------------------------------------------------------------------------
# iRECIST (docs/criteria.md §3)

#: A response right after an iUPD (docs/criteria.md §9.1), iNN included (non-target-only disease).
_IRECIST_RESPONSE = (Category.ICR, Category.IPR, Category.ISD, Category.INN)


def _iupd_opens_episode(categories: list[Category | None], t: int) -> bool:
    """``t`` is iUPD and the previous evaluable (non-NE) iRECIST response was not iUPD: a new episode."""
    if categories[t] is not Category.IUPD:
        return False
    for k in range(t - 1, 0, -1):
        if categories[k] is None:
            break
        if categories[k] is not Category.NE:
            return categories[k] is not Category.IUPD
    return True


def irecist_first_iupd_recist_pd(f: Facts) -> Iterator[Alert]:
    """DISC_IRECIST_IUPD_RECIST_PD: the first iUPD of an episode while RECIST says PD."""
    if not f.compared(Criterion.RECIST, Criterion.IRECIST):
        return
    categories, recist_categories = f.categories[Criterion.IRECIST], f.categories[Criterion.RECIST]
    for t in f.followups:
        if _iupd_opens_episode(categories, t) and recist_categories[t] is Category.PD:
            yield make_alert(
                "DISC_IRECIST_IUPD_RECIST_PD",
                t,
                "RECIST 1.1 progression is only unconfirmed progression (iUPD) under iRECIST: if the patient "
                "is clinically stable, confirm with imaging in 4-8 weeks before stopping immunotherapy.",
            )


def pseudoprogression(f: Facts) -> Iterator[Alert]:
    """DISC_PSEUDOPROGRESSION: iCR/iPR/iSD/iNN directly after an iUPD (NE visits skipped)."""
    if not f.compared(Criterion.IRECIST):
        return
    categories = f.categories[Criterion.IRECIST]
    previous: Category | None = None
    for t in f.followups:
        category = categories[t]
        if category in _IRECIST_RESPONSE and previous is Category.IUPD:
            yield make_alert(
                "DISC_PSEUDOPROGRESSION",
                t,
                f"Pseudoprogression pattern: {category.value} after unconfirmed progression (iUPD); RECIST "
                "1.1 would have stopped at progression.",
            )
        if category is not None and category is not Category.NE:
            previous = category


def irecist_confirmation_window(f: Facts) -> Iterator[Alert]:
    """IRECIST_CONFIRMATION_OUTSIDE_WINDOW: the scan after a new iUPD is < 28 or > 56 days later (±2 days)."""
    if Criterion.IRECIST not in f.results:
        return
    categories = f.categories[Criterion.IRECIST]
    tps = f.timeline.timepoints
    for t in f.followups:
        if t + 1 >= len(tps) or not _iupd_opens_episode(categories, t):
            continue
        days = (tps[t + 1].date - tps[t].date).days
        if days < 28 - 2 or days > 56 + 2:
            yield make_alert(
                "IRECIST_CONFIRMATION_OUTSIDE_WINDOW",
                t + 1,
                f"This scan is {days} days after the unconfirmed progression (iUPD); confirmation is due 4-8 "
                "weeks later, and a scan before 4 weeks confirms only with an additional new lesion on a "
                "scan for new symptoms.",
            )


# --------------------------------------------------------------------------------------------------------
# Choi, mChoi and ancillary attenuation (docs/criteria.md §4, §9.1)


def choi_discordance(f: Facts) -> Iterator[Alert]:
    """DISC_RECIST_PD_CHOI_PR, DISC_RECIST_SD_CHOI_PR, DISC_CHOI_PD_RECIST_NOT_PD."""
    density = f.density_criterion
    if density is None or not f.compared(Criterion.RECIST, density):
        return
    name = "Choi" if density is Criterion.CHOI else "modified Choi"
    recist_categories, density_categories = f.categories[Criterion.RECIST], f.categories[density]
    densities = choi.choi_inputs(f.timeline).density
    for t in f.followups:
        rec, cho = recist_categories[t], density_categories[t]
        if rec is Category.PD and cho is Category.PR:
            yield make_alert(
                "DISC_RECIST_PD_CHOI_PR",
                t,
                f"RECIST progression but {name} partial response: possible pseudoprogression (haemorrhage, "
                "myxoid or cystic change) in a responding tumour; do not stop an effective TKI on size "
                "alone." + _assumption_text(densities[t]),
            )
        elif rec is Category.SD and cho is Category.PR:
            yield make_alert(
                "DISC_RECIST_SD_CHOI_PR",
                t,
                f"RECIST stable disease but {name} partial response (density drop or 10-29 % shrinkage): a "
                "responder that RECIST misses." + _assumption_text(densities[t]),
            )
        elif cho is Category.PD and rec in (Category.CR, Category.PR, Category.SD, Category.NON_CR_NON_PD):
            assert rec is not None
            yield make_alert(
                "DISC_CHOI_PD_RECIST_NOT_PD",
                t,
                f"{name} progression while RECIST is {rec.value}: possible early resistance (a nodule within "
                "a mass, or growth without a density response) that RECIST misses.",
            )


def _assumption_text(density: choi.PairedDensity | None) -> str:
    """The phase assumption a density comparison rests on, as a sentence to append; empty when none."""
    if density is None or not density.evaluable or density.assumption is None:
        return ""
    return f" Warning: density compared on an assumption ({density.assumption})."


def choi_density_not_evaluable(f: Facts) -> Iterator[Alert]:
    """CHOI_DENSITY_NOT_EVALUABLE: Choi/mChoi requested, density not evaluable, Choi not already CR or PD."""
    criteria = [c for c in (Criterion.CHOI, Criterion.MCHOI) if c in f.requested and c in f.results]
    if not criteria:
        return
    densities = choi.choi_inputs(f.timeline).density
    categories = [f.categories[c] for c in criteria]
    for t in f.followups:
        if all(of_criterion[t] in (Category.CR, Category.PD) for of_criterion in categories):
            continue
        density = densities[t]
        if density is not None and not density.evaluable:
            yield make_alert(
                "CHOI_DENSITY_NOT_EVALUABLE",
                t,
                f"Choi density cannot be compared ({density.reason}); a PR by size still counts, but stable "
                "disease or progression cannot be told apart from a density response.",
            )


def _paired_density_drop(f: Facts, t: int) -> choi.PairedDensity | None:
    """Paired target density on comparable CT (same phase per lesion) that fell by at least 15 %."""
    registry = f.registry
    timeline = f.timeline
    density = choi.paired_density(
        timeline.baseline,
        timeline.timepoints[t],
        registry.targets,
        registry.target_records[t],
        None,
        timeline.options.choi_assume_unknown_phase,
    )
    if (
        density.evaluable
        and density.sum_hu is not None
        and density.baseline_sum_hu is not None
        and choi.choi_density_pr(density.sum_hu, density.baseline_sum_hu)
    ):
        return density
    return None


def _density_text(density: choi.PairedDensity) -> str:
    before, now = density.baseline_mean_hu, density.mean_hu
    assert before is not None and now is not None
    change = (now - before) * 100 / before
    text = f"mean target attenuation {before:.0f} -> {now:.0f} HU ({_pct(change)})"
    return text + (f" [warning: {density.assumption}]" if density.assumption else "")


def ancillary_attenuation(f: Facts) -> Iterator[Alert]:
    """ANC_ATTENUATION_DROP_SIZE_STABLE and ANC_SIZE_UP_ATTENUATION_DOWN (Choi/mChoi not requested)."""
    if Criterion.CHOI in f.requested or Criterion.MCHOI in f.requested or Criterion.RECIST not in f.results:
        return
    for t in f.followups:
        step = f.step(Criterion.RECIST, t)
        if step is None or step.category not in (Category.SD, Category.PD):
            continue
        targets_only_pd = (
            step.category is Category.PD
            and step.target is Category.PD
            and not step.new_lesion
            and step.non_target is not Category.PD
        )
        if step.category is Category.SD or targets_only_pd:
            density = _paired_density_drop(f, t)
            if density is None:
                continue
            if step.category is Category.SD:
                yield make_alert(
                    "ANC_ATTENUATION_DROP_SIZE_STABLE",
                    t,
                    f"Size stable (RECIST SD) but {_density_text(density)}, suggesting necrosis: possibly a "
                    "responder that RECIST misses.",
                )
            else:
                yield make_alert(
                    "ANC_SIZE_UP_ATTENUATION_DOWN",
                    t,
                    f"Targets grew (RECIST PD) while {_density_text(density)}: possible pseudoprogression by "
                    "haemorrhage, necrosis or cystic change.",
                )


def ancillary_signs(f: Facts) -> Iterator[Alert]:
    """ANC_MORPHOLOGIC_RESPONSE_SIGNS: RECIST SD or PD while a target shows an ancillary response sign."""
    if Criterion.RECIST not in f.results:
        return
    recist_categories = f.categories[Criterion.RECIST]
    for t in f.followups:
        category = recist_categories[t]
        if category not in (Category.SD, Category.PD):
            continue
        signs = [
            f"{record.id}: {', '.join(sorted(sign.value for sign in record.ancillary))}"
            for record in f.registry.target_records[t]
            if record is not None and record.ancillary
        ]
        if signs:
            assert category is not None
            yield make_alert(
                "ANC_MORPHOLOGIC_RESPONSE_SIGNS",
                t,
                f"RECIST {category.value} while target(s) show ancillary response signs "
                f"({'; '.join(signs)}), which ESGAR counts as indicators of response.",
            )


# --------------------------------------------------------------------------------------------------------
# Chun (docs/criteria.md §7)


def chun_modality(f: Facts) -> Iterator[Alert]:
    """CHUN_NOT_EVALUABLE_MODALITY: Chun requested, baseline or follow-up not CT."""
    if Criterion.CHUN not in f.requested:
        return
    baseline = f.timeline.baseline
    for t in f.followups:
        tp = f.timeline.timepoints[t]
        if not morphology.is_ct(baseline) or not morphology.is_ct(tp):
            yield make_alert(
                "CHUN_NOT_EVALUABLE_MODALITY",
                t,
                f"Chun morphologic response is validated on CT only (baseline {baseline.modality}, this scan "
                f"{tp.modality}), so it is not evaluable here.",
            )


def chun_discordance(f: Facts) -> Iterator[Alert]:
    """DISC_RECIST_PD_CHUN_OPTIMAL, DISC_RECIST_SD_CHUN_OPTIMAL, DISC_RECIST_RESPONSE_CHUN_NONE."""
    if not f.compared(Criterion.RECIST, Criterion.CHUN):
        return
    recist_categories, chun_categories = f.categories[Criterion.RECIST], f.categories[Criterion.CHUN]
    for t in f.followups:
        rec, chun = recist_categories[t], chun_categories[t]
        if chun is Category.OPTIMAL and rec is Category.PD:
            yield make_alert(
                "DISC_RECIST_PD_CHUN_OPTIMAL",
                t,
                "RECIST progression but optimal morphologic response (Chun): on bevacizumab, morphology "
                "predicts pathological response and survival better than size.",
            )
        elif chun is Category.OPTIMAL and rec is Category.SD:
            yield make_alert(
                "DISC_RECIST_SD_CHUN_OPTIMAL",
                t,
                "RECIST stable disease but optimal morphologic response (Chun): a responder that RECIST "
                "misses.",
            )
        elif chun is Category.NO_RESPONSE and rec in (Category.PR, Category.CR):
            assert rec is not None
            yield make_alert(
                "DISC_RECIST_RESPONSE_CHUN_NONE",
                t,
                f"RECIST {rec.value} without morphologic change (Chun no response): the pathological "
                "response may be weaker than the shrinkage suggests.",
            )


# --------------------------------------------------------------------------------------------------------
# mRECIST (docs/criteria.md §5)


def mrecist_discordance(f: Facts) -> Iterator[Alert]:
    """DISC_MRECIST_RECIST: HCC, mRECIST category differs from RECIST (warning if exactly one is PD)."""
    if not f.compared(Criterion.RECIST, Criterion.MRECIST) or not f.results[Criterion.MRECIST].applicable:
        return
    recist_categories, mrecist_categories = f.categories[Criterion.RECIST], f.categories[Criterion.MRECIST]
    for t in f.followups:
        rec, mrec = recist_categories[t], mrecist_categories[t]
        if rec is None or mrec is None or mrec is Category.NA or rec is mrec:
            continue
        one_pd = (rec is Category.PD) != (mrec is Category.PD)
        yield make_alert(
            "DISC_MRECIST_RECIST",
            t,
            f"mRECIST {mrec.value} (viable, arterially enhancing tumour) differs from RECIST {rec.value} "
            "(total size): the viable-tumour response is not captured by size.",
            Severity.WARNING if one_pd else None,
        )


# --------------------------------------------------------------------------------------------------------
# Applicability (docs/criteria.md §0)


def _is_crc(primary: str) -> bool:
    return primary.strip().upper() in ("CRC", "COLORECTAL", "COLON", "RECTAL")


def _on_bevacizumab(therapy: tuple[str, ...]) -> bool:
    return any("bevacizumab" in agent.lower() or "avastin" in agent.lower() for agent in therapy)


def criterion_applicability(f: Facts) -> Iterator[Alert]:
    """CRITERION_NOT_APPLICABLE (mRECIST/EASL outside HCC) and CRITERION_OUTSIDE_VALIDATED_SETTING."""
    context = f.timeline.context
    primary = context.primary
    hcc_only = [c.value for c in (Criterion.MRECIST, Criterion.EASL) if c in f.requested]
    if hcc_only and primary.strip().upper() != "HCC":
        yield make_alert(
            "CRITERION_NOT_APPLICABLE",
            0,
            f"{' and '.join(hcc_only)} are defined for hepatocellular carcinoma only, not for {primary}; "
            "they are reported as NA.",
        )
    outside: list[str] = []
    if Criterion.CHOI in f.requested and primary.strip().upper() != "GIST":
        outside.append(f"Choi was validated in GIST on imatinib, not in {primary}")
    if Criterion.CHUN in f.requested and not (_is_crc(primary) and _on_bevacizumab(context.therapy)):
        outside.append(
            f"Chun was validated in colorectal liver metastases on bevacizumab (here {primary}, "
            f"{', '.join(context.therapy) or 'therapy not given'})"
        )
    if outside:
        yield make_alert(
            "CRITERION_OUTSIDE_VALIDATED_SETTING",
            0,
            f"{'; '.join(outside)}: computed, but interpret with care.",
        )


# --------------------------------------------------------------------------------------------------------
# Entry point

# --------------------------------------------------------------------------------------------------------
# Disease at other sites (docs/criteria.md §13)


def _site_text(f: Facts, status: SiteStatus) -> str:
    """``liver targets 62 mm (+34.8 % vs nadir 46 mm at FU1; +10.7 % vs baseline 56 mm)``, then the
    non-targets and new lesions of the site."""
    name = "liver" if status.site == LIVER else "extrahepatic"
    parts: list[str] = []
    targets = status.targets
    if targets is not None and targets.sum_mm is not None:
        where = f.timeline.label(targets.nadir_index) if targets.nadir_index is not None else "baseline"
        low = _mm(targets.nadir_sum_mm or Decimal(0))
        parts.append(
            f"{name} targets {_mm(targets.sum_mm)} ({_pct(targets.change_vs_nadir_pct)} vs nadir {low} at "
            f"{where}; {_pct(targets.change_vs_baseline_pct)} vs baseline {_mm(targets.baseline_sum_mm)}, "
            f"{targets.category.value})"
        )
    if status.non_target not in (Category.NONE,):
        parts.append(f"{name} non-targets {status.non_target.value}")
    if status.new_lesions:
        parts.append(f"new {name} lesion(s) {_ids(status.new_lesions)}")
    return "; ".join(parts) if parts else f"{name} {status.category.value}"


_NOT_PROGRESSING = (Category.CR, Category.PR, Category.SD, Category.NON_CR_NON_PD)


def _site_pair(f: Facts, t: int) -> tuple[SiteStatus, SiteStatus] | None:
    split_t = f.sites[t] if t < len(f.sites) else None
    if split_t is None or split_t.not_assessed is not None:
        return None
    liver, other = split_t.site(LIVER), split_t.site(EXTRAHEPATIC)
    if liver is None or other is None or not liver.has_baseline_disease or not other.has_baseline_disease:
        return None
    return liver, other


def site_discordant_progression(f: Facts) -> Iterator[Alert]:
    """SITE_DISCORDANT_PROGRESSION: RECIST PD at a follow-up where the liver progresses by its own rules and
    the extrahepatic disease present at baseline is stable or responding (no new extrahepatic lesion)."""
    for t in f.followups:
        if f.category(Criterion.RECIST, t) is not Category.PD:
            continue
        pair = _site_pair(f, t)
        if pair is None:
            continue
        liver, other = pair
        if liver.category is Category.PD and other.category in _NOT_PROGRESSING:
            yield make_alert(
                "SITE_DISCORDANT_PROGRESSION",
                t,
                f"Site-discordant progression: the liver progresses ({_site_text(f, liver)}) while the "
                f"extrahepatic disease is {other.category.value} ({_site_text(f, other)}); consider "
                "pseudoprogression and correlate with tumour markers or PET before stopping an effective "
                "treatment.",
            )


def liver_response_extrahepatic_pd(f: Facts) -> Iterator[Alert]:
    """SITE_LIVER_RESPONSE_EXTRAHEPATIC_PD: RECIST PD driven by extrahepatic disease while the liver disease,
    by its own rules, responds (CR or PR)."""
    for t in f.followups:
        if f.category(Criterion.RECIST, t) is not Category.PD:
            continue
        pair = _site_pair(f, t)
        if pair is None:
            continue
        liver, other = pair
        if liver.category in (Category.CR, Category.PR) and other.category is Category.PD:
            yield make_alert(
                "SITE_LIVER_RESPONSE_EXTRAHEPATIC_PD",
                t,
                f"The liver responds ({_site_text(f, liver)}) but extrahepatic disease progresses "
                f"({_site_text(f, other)}): RECIST 1.1 assesses the patient as a whole, so the overall PD "
                "correctly overrides the liver response.",
            )


# --------------------------------------------------------------------------------------------------------
# Tumour markers (docs/criteria.md §13.2)


def _marker_text(status: MarkerStatus) -> str:
    unit = f" {status.unit}" if status.unit else ""
    parts = [f"{status.marker.value} {_num(status.value)}{unit} on {status.date}"]
    if status.pretreatment is not None:
        parts.append(
            f"{_pct(status.change_vs_pretreatment_pct)} vs pre-treatment {_num(status.pretreatment)}{unit} "
            f"({status.pretreatment_date})"
        )
    if status.nadir is not None:
        parts.append(
            f"{_pct(status.change_vs_nadir_pct)} vs nadir {_num(status.nadir)}{unit} ({status.nadir_date})"
        )
    if status.upper_limit is not None:
        parts.append(f"ULN {_num(status.upper_limit)}{unit}")
    return ", ".join(parts)


def _num(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value.normalize():f}"


def marker_discordance(f: Facts) -> Iterator[Alert]:
    """MARKER_FALLING_RECIST_PD: RECIST PD while a marker responds (>= 50 % fall from pre-treatment);
    MARKER_RISING_RECIST_NOT_PD: RECIST CR, PR, SD or non-CR/non-PD while a marker progresses (>= 25 % over
    the nadir and above the ULN)."""
    for t in f.followups:
        category = f.category(Criterion.RECIST, t)
        for series in f.markers:
            status = series.at(t)
            if status is None:
                continue
            figures = _marker_text(status)
            if category is Category.PD and status.category is MarkerCategory.RESPONSE:
                yield make_alert(
                    "MARKER_FALLING_RECIST_PD",
                    t,
                    f"Marker-discordant progression: RECIST 1.1 PD while {figures} has fallen by >= 50 % "
                    "from its pre-treatment value (marker response); consider pseudoprogression and "
                    "correlate with the other sites or PET before stopping treatment.",
                )
            if category in _NOT_PROGRESSING and status.category is MarkerCategory.PROGRESSION:
                yield make_alert(
                    "MARKER_RISING_RECIST_NOT_PD",
                    t,
                    f"Rising marker with RECIST 1.1 {category.value}: {figures} is >= 25 % over its nadir "
                    "and above the upper limit of normal (marker progression); look for disease the "
                    "measurements do not capture (non-measurable, extrahepatic or new lesions).",
                )


# --------------------------------------------------------------------------------------------------------
# PET (docs/criteria.md §13.3)


def metabolic_discordance(f: Facts) -> Iterator[Alert]:
    """METABOLIC_RESPONSE_RECIST_PD: RECIST PD at a CT while a PET within ``pet_window_days`` of it shows a
    metabolic response (PMR or CMR)."""
    window = f.timeline.options.pet_window_days
    for t in f.followups:
        if f.category(Criterion.RECIST, t) is not Category.PD:
            continue
        ct = f.timeline.timepoints[t].date
        for result in f.metabolic:
            days = abs((result.date - ct).days)
            if result.category not in RESPONDING or days > window:
                continue
            change = "" if result.change_pct is None else f" ({_pct(result.change_pct)})"
            fallback = f" {result.fallback}." if result.fallback else ""
            yield make_alert(
                "METABOLIC_RESPONSE_RECIST_PD",
                t,
                f"Anatomic progression with metabolic response: RECIST 1.1 PD on the CT of {ct} while the "
                f"PET of {result.date} ({days} days away) shows {result.category.value} by {result.method}: "
                f"{result.quantity} {_num(result.current_value)} vs {_num(result.baseline_value)} at the "
                f"baseline PET ({result.baseline_date}){change}; consider pseudoprogression.{fallback}",
            )



RULES: tuple[Rule, ...] = (
    baseline_timing,
    evidence,
    baseline_disease,
    target_not_measurable,
    target_limits,
    locally_treated_targets,
    criterion_applicability,
    slice_thickness,
    modality_changed,
    phase_mismatch,
    interval_too_long,
    tracking,
    target_not_assessed,
    equivocal_new,
    disappeared_liver_lesion,
    backdated_pd,
    reappearance_after_cr,
    borderline_threshold,
    post_pd,
    irecist_first_iupd_recist_pd,
    pseudoprogression,
    irecist_confirmation_window,
    choi_density_not_evaluable,
    choi_discordance,
    ancillary_attenuation,
    ancillary_signs,
    chun_modality,
    chun_discordance,
    mrecist_discordance,
    site_discordant_progression,
    liver_response_extrahepatic_pd,
    marker_discordance,
    metabolic_discordance,
)


def merge(alerts: Iterable[Alert]) -> tuple[Alert, ...]:
    """One alert per ``(code, timepoint)``: messages joined, highest severity kept; ordered by time point."""
    merged: dict[tuple[str, int | None], Alert] = {}
    for alert in alerts:
        key = (alert.code, alert.timepoint)
        earlier = merged.get(key)
        if earlier is None:
            merged[key] = alert
        elif alert.message not in earlier.message:
            severity = min(earlier.severity, alert.severity, key=SEVERITY_RANK.__getitem__)
            merged[key] = Alert(
                alert.code, alert.timepoint, severity, f"{earlier.message} {alert.message}", alert.citation
            )
    return tuple(sorted(merged.values(), key=lambda a: -1 if a.timepoint is None else a.timepoint))


def evaluate(timeline: Timeline, results: tuple[CriterionResult, ...]) -> tuple[Alert, ...]:
    """Every alert of docs/criteria.md §9 for ``timeline`` given the criteria ``results`` (never changed)."""
    if not timeline.timepoints:
        return (
            make_alert("BASELINE_MISSING", None, "No baseline examination: no response can be computed."),
        )
    shared = facts(timeline, results)
    return merge(alert for rule in RULES for alert in rule(shared))
