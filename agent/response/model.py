"""Typed model of the clinical core: the measurement timeline going in and the assessment coming out.

Everything here is a frozen dataclass or an enum; measurements are ``Decimal`` so that thresholds are exact
(docs/criteria.md §1.4). Field names follow docs/criteria.md §1.1-§1.2 and §1.7. This module must never
import anything outside the standard library: the SR reader, the pipeline and the CLI all build these objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.response.markers import MarkerSeries
    from agent.response.metabolic import MetabolicResult
    from agent.response.sites import SiteTimepoint

Day = date  # ``date`` is also a field name of the time point records


class Criterion(StrEnum):
    """A response criterion, valued with its name in ``context.criteria``."""

    RECIST = "RECIST1.1"
    IRECIST = "iRECIST"
    CHOI = "Choi"
    MCHOI = "mChoi"
    MRECIST = "mRECIST"
    EASL = "EASL"
    CHUN = "Chun"

    @property
    def key(self) -> str:
        """Key of this criterion in the Assessment JSON (``recist``, ``irecist``, ...)."""
        return _CRITERION_KEYS[self]


_CRITERION_KEYS = {
    Criterion.RECIST: "recist",
    Criterion.IRECIST: "irecist",
    Criterion.CHOI: "choi",
    Criterion.MCHOI: "mchoi",
    Criterion.MRECIST: "mrecist",
    Criterion.EASL: "easl",
    Criterion.CHUN: "chun",
}


class LesionKind(StrEnum):
    TARGET = "target"
    NON_TARGET = "non-target"
    NEW = "new"


class LesionStatus(StrEnum):
    """Status of a lesion record; which values are allowed depends on the kind (docs/criteria.md §1.2)."""

    # target
    MEASURED = "measured"
    TOO_SMALL = "too_small"
    DISAPPEARED = "disappeared"
    COALESCED = "coalesced"
    NOT_ASSESSED = "not_assessed"  # target and non-target
    # non-target
    PRESENT = "present"
    ABSENT = "absent"  # non-target and new
    UNEQUIVOCAL_PROGRESSION = "unequivocal_progression"
    # new
    UNEQUIVOCAL = "unequivocal"
    EQUIVOCAL = "equivocal"


#: Statuses allowed per kind; the first one is the default when the record gives none.
STATUSES_BY_KIND: Mapping[LesionKind, tuple[LesionStatus, ...]] = {
    LesionKind.TARGET: (
        LesionStatus.MEASURED,
        LesionStatus.TOO_SMALL,
        LesionStatus.DISAPPEARED,
        LesionStatus.COALESCED,
        LesionStatus.NOT_ASSESSED,
    ),
    LesionKind.NON_TARGET: (
        LesionStatus.PRESENT,
        LesionStatus.ABSENT,
        LesionStatus.UNEQUIVOCAL_PROGRESSION,
        LesionStatus.NOT_ASSESSED,
    ),
    # iRECIST: ``unequivocal_progression`` on a new lesion = unequivocal progression of new non-target lesions
    LesionKind.NEW: (
        LesionStatus.UNEQUIVOCAL,
        LesionStatus.EQUIVOCAL,
        LesionStatus.ABSENT,
        LesionStatus.UNEQUIVOCAL_PROGRESSION,
    ),
}

#: Organ names and codes that mean a lymph node (docs/criteria.md §1.2), compared in lower case without
#: spaces, dashes or underscores, and without a ``sct:`` prefix.
NODE_ORGANS = frozenset(
    {
        "lymphnode",
        "lymphnodes",
        "node",
        "nodes",
        "ln",
        "lymphadenopathy",
        "59441001",  # SNOMED CT: Lymph node structure
        "30746006",  # SNOMED CT: Lymphadenopathy
    }
)


def is_node_organ(organ: str) -> bool:
    """Whether an organ name or code means a lymph node (``lymph node``, ``LN``, ``SCT:59441001`` ...)."""
    key = organ.strip().lower().removeprefix("sct:").removeprefix("sct ")
    for sep in (" ", "_", "-"):
        key = key.replace(sep, "")
    return key in NODE_ORGANS


class Phase(StrEnum):
    UNENHANCED = "unenhanced"
    ARTERIAL = "arterial"
    PORTAL_VENOUS = "portal_venous"
    DELAYED = "delayed"
    HEPATOBILIARY = "hepatobiliary"


class NewCategory(StrEnum):
    """iRECIST: a new lesion is a new-lesion target (NLT) or new-lesion non-target (NLNT)."""

    TARGET = "target"
    NON_TARGET = "non-target"


class IntratumoralNodule(StrEnum):
    NONE = "none"
    NEW = "new"
    ENLARGING = "enlarging"


class ChunAttenuation(StrEnum):
    HETEROGENEOUS = "heterogeneous"
    MIXED = "mixed"
    HOMOGENEOUS_HYPOATTENUATING = "homogeneous_hypoattenuating"  # Chun 2009 "homogeneous and hypoattenuating"


class ChunInterface(StrEnum):
    POORLY_DEFINED = "poorly_defined"  # thick, poorly defined
    VARIABLE = "variable"
    SHARP = "sharp"  # thin, sharply defined


class ChunRim(StrEnum):
    PRESENT = "present"
    VARIABLE = "variable"
    ABSENT = "absent"


class Ancillary(StrEnum):
    """ESGAR ancillary response signs."""

    NECROSIS = "necrosis"
    FIBROSIS = "fibrosis"
    CALCIFICATION = "calcification"
    HAEMORRHAGE = "haemorrhage"
    CYSTIC_CHANGE = "cystic_change"
    INTERFACE_SHARPENING = "interface_sharpening"
    DECREASED_ENHANCEMENT = "decreased_enhancement"


class PrPersistence(StrEnum):
    EORTC_FAQ = "eortc_faq"
    STRICT = "strict"


class ChoiPdReference(StrEnum):
    NADIR = "nadir"
    BASELINE = "baseline"


class Category(StrEnum):
    """Response codes of docs/criteria.md §1.7 (all criteria share one enum so results have one shape)."""

    CR = "CR"
    PR = "PR"
    SD = "SD"
    PD = "PD"
    NE = "NE"
    NON_CR_NON_PD = "NON_CR_NON_PD"
    NA = "NA"
    NONE = "NONE"  # sub-result only: no target (or no non-target) lesion at baseline
    # iRECIST
    ICR = "iCR"
    IPR = "iPR"
    ISD = "iSD"
    INN = "iNN"
    IUPD = "iUPD"
    ICPD = "iCPD"
    # Chun
    OPTIMAL = "optimal"
    INCOMPLETE = "incomplete"
    NO_RESPONSE = "none"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


# Most urgent first: the one order alerts are sorted and escalated by, everywhere in the agent.
SEVERITY_RANK: dict[str, int] = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


# --------------------------------------------------------------------------------------------------------
# Input: the timeline


@dataclass(frozen=True, slots=True)
class Options:
    """docs/criteria.md §1.5, with the defaults of the spec."""

    pr_persistence: PrPersistence = PrPersistence.EORTC_FAQ
    confirmation_required: bool = False
    min_sd_days: int = 42
    choi_pd_reference: ChoiPdReference = ChoiPdReference.NADIR
    choi_density_phase: Phase = Phase.PORTAL_VENOUS
    # Compare Choi density when a time point is contrast-enhanced CT of unknown phase, assuming it is
    # ``choi_density_phase`` (stated in the result and any alert resting on it); a known mismatch never is.
    choi_assume_unknown_phase: bool = True
    mrecist_require_5mm: bool = False
    max_interval_days: int = 112
    borderline_pp: Decimal = Decimal(2)
    borderline_mm: Decimal = Decimal(1)
    baseline_window_days: int = 28
    plausible_min_mm: Decimal = Decimal(1)
    plausible_max_mm: Decimal = Decimal(400)
    # Tumour markers (docs/criteria.md §13.2): a result counts for a scan when taken at most this many days
    # before it (or after it, up to marker_after_days).
    marker_window_days: int = 30
    marker_after_days: int = 7
    # PET (docs/criteria.md §13.3): a PET within this many days of a CT is compared with it.
    pet_window_days: int = 42


@dataclass(frozen=True, slots=True)
class Context:
    treatment_start: date | None
    primary: str
    therapy: tuple[str, ...] = ()
    criteria: tuple[Criterion, ...] = (Criterion.RECIST,)


@dataclass(frozen=True, slots=True)
class Lesion:
    """One lesion record at one time point (docs/criteria.md §1.2); ``status`` defaults by kind."""

    id: str
    organ: str
    kind: LesionKind
    status: LesionStatus
    is_node: bool = False
    long_axis_mm: Decimal | None = None
    short_axis_mm: Decimal | None = None
    mean_hu: Decimal | None = None
    fragments_mm: tuple[Decimal, ...] | None = None
    merged_into: str | None = None
    phase: Phase | None = None
    increased_since_prior: bool = False
    new_category: NewCategory | None = None
    prior_visible: bool = False
    intratumoral_nodule: IntratumoralNodule = IntratumoralNodule.NONE
    viable_long_axis_mm: Decimal | None = None
    viable_perp_axis_mm: Decimal | None = None
    chun_group: int | None = None
    chun_attenuation: ChunAttenuation | None = None
    chun_interface: ChunInterface | None = None
    chun_rim: ChunRim | None = None
    ancillary: frozenset[Ancillary] = frozenset()
    locally_treated: bool = False

    @property
    def diameter_mm(self) -> Decimal | None:
        """The RECIST diameter: short axis for a node, long axis otherwise."""
        return self.short_axis_mm if self.is_node else self.long_axis_mm


@dataclass(frozen=True, slots=True)
class TimePoint:
    date: date
    modality: str | None = "CT"
    phase: Phase | None = None
    slice_thickness_mm: Decimal | None = None
    contrast: bool | None = None
    unscheduled_for_symptoms: bool = False
    lesions: tuple[Lesion, ...] = ()
    label: str | None = None  # the visit label shown with the results ("FU2"); derived when not given

    def lesion_phase(self, lesion: Lesion) -> Phase | None:
        """The contrast phase of a lesion: its own, else the time point's."""
        return lesion.phase if lesion.phase is not None else self.phase


class Marker(StrEnum):
    """Serum tumour markers the core reads (docs/criteria.md §13.2)."""

    CEA = "CEA"
    CA19_9 = "CA 19-9"
    CA15_3 = "CA 15-3"
    CA125 = "CA 125"
    AFP = "AFP"
    CHROMOGRANIN_A = "chromogranin A"


@dataclass(frozen=True, slots=True)
class MarkerResult:
    """One laboratory result of a tumour marker: value and unit, the date the sample was taken, and the
    laboratory's reference range (``upper_limit`` is the upper limit of normal, ULN)."""

    marker: Marker
    date: date
    value: Decimal
    unit: str
    lower_limit: Decimal | None = None
    upper_limit: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PetLesion:
    """One lesion's metabolic measurements on one FDG PET (docs/criteria.md §13.3): SUVmax and SUVpeak
    normalised to body weight, SULpeak and SULmax (SUV normalised to lean body mass) where present, the
    metabolic volume in ml; ``absent``: no uptake above background any more."""

    id: str
    organ: str = "unknown"
    suv_max: Decimal | None = None
    suv_peak: Decimal | None = None
    sul_peak: Decimal | None = None
    sul_max: Decimal | None = None
    volume_ml: Decimal | None = None
    absent: bool = False


@dataclass(frozen=True, slots=True)
class PetScan:
    """One FDG PET/CT examination's lesion measurements (``liver_sul_mean``: the PERCIST liver reference)."""

    date: date
    lesions: tuple[PetLesion, ...] = ()
    liver_sul_mean: Decimal | None = None
    new_lesions: tuple[str, ...] = ()  # new FDG-avid lesions (PMD under both PERCIST and EORTC)


@dataclass(frozen=True, slots=True)
class Timeline:
    """A patient series in date order.

    The baseline is the latest time point on or before treatment start (docs/criteria.md §1.6); earlier
    ones are pre-treatment history, never assessed. Without a treatment start, or when every scan is after
    it, the baseline is the first time point.
    """

    context: Context
    timepoints: tuple[TimePoint, ...]
    options: Options = field(default_factory=Options)
    markers: tuple[MarkerResult, ...] = ()  # tumour marker results of the patient, in date order
    pet: tuple[PetScan, ...] = ()  # FDG PET/CT examinations of the patient, in date order

    @property
    def baseline_index(self) -> int:
        start = self.context.treatment_start
        index = 0
        if start is not None:
            for i, tp in enumerate(self.timepoints):
                if tp.date <= start:
                    index = i
        return index

    @property
    def baseline(self) -> TimePoint:
        return self.timepoints[self.baseline_index]

    @property
    def followups(self) -> range:
        """Indices of the follow-up time points (after the baseline)."""
        return range(self.baseline_index + 1, len(self.timepoints))

    def label(self, index: int) -> str:
        """The visit label of a time point: its own, else ``BL``, ``FU1``, ``FU2`` ... or ``PRE1`` ..."""
        own = self.timepoints[index].label
        if own:
            return own
        base = self.baseline_index
        if index == base:
            return "BL"
        return f"FU{index - base}" if index > base else f"PRE{index + 1}"


# --------------------------------------------------------------------------------------------------------
# Output: the assessment


@dataclass(frozen=True, slots=True)
class LesionDetail:
    """One lesion's figures behind a result: ``quantity`` at baseline and now, and what it gave."""

    lesion_id: str
    quantity: str  # "mean_hu", "chun_group", "diameter_mm"
    baseline: Decimal | None
    current: Decimal | None
    result: str | None = None  # Chun lesion response, or why a lesion was left out
    used: bool = True  # counted in the patient-level figure (e.g. the mean density)


@dataclass(frozen=True, slots=True)
class TimepointAssessment:
    """One criterion at one follow-up time point, with the reason it was reached.

    ``sum_mm`` is the criterion's target quantity (RECIST sum of diameters, mRECIST viable sum, EASL
    product sum in mm², Choi size sum); ``None`` when a target is not assessed (``partial_sum_mm`` is then
    the sum of the assessed ones). Percentages are exact (not rounded); round only for display.
    """

    index: int
    date: date
    category: Category
    target: Category = Category.NONE
    non_target: Category = Category.NONE
    new_lesion: bool = False  # unequivocal new disease present (RECIST sense)
    sum_mm: Decimal | None = None
    partial_sum_mm: Decimal | None = None
    baseline_sum_mm: Decimal | None = None
    nadir_sum_mm: Decimal | None = None  # nadir the PD test compared against (before this time point)
    change_vs_baseline_pct: Decimal | None = None
    change_vs_nadir_pct: Decimal | None = None
    ne_reason: str | None = None
    rule: str = ""
    citation: str = ""
    provisional_category: Category | None = None  # RECIST: the answer with what was known at the time
    # Facts the alert rules need (filled by the criteria that know them).
    missing_targets: tuple[str, ...] = ()  # baseline targets without a value
    reappearance_after_cr: bool = False
    post_pd: bool = False  # after the first PD (RECIST) / iCPD (iRECIST)
    backdated: bool = False  # final category differs from provisional (equivocal new lesion confirmed)
    # Density (Choi / mChoi): unweighted mean HU over targets, baseline and now.
    density_hu: Decimal | None = None
    density_baseline_hu: Decimal | None = None
    change_density_pct: Decimal | None = None
    notes: tuple[str, ...] = ()
    # What the result was compared with (docs/criteria.md §1.7): ``reference`` is "nadir" or "baseline",
    # the time point whose sum ``nadir_sum_mm`` is; the PR test always compares with the baseline.
    reference: str | None = None
    reference_index: int | None = None
    reference_date: Day | None = None
    reference_label: str | None = None
    lesions: tuple[LesionDetail, ...] = ()  # per-lesion figures (Choi HU, Chun group)
    state: str | None = None  # iRECIST: the state after this visit
    next_step: str | None = None  # iRECIST: what would confirm or reset an open iUPD


@dataclass(frozen=True, slots=True)
class Threshold:
    """The target quantity at which the category of the next read would change."""

    category: Category
    comparison: str  # ">=" or "<="
    value: Decimal
    quantity: str  # "target_sum_mm", "density_hu", ...
    rule: str


@dataclass(frozen=True, slots=True)
class CriterionResult:
    criterion: Criterion
    timepoints: tuple[TimepointAssessment | None, ...]  # aligned with the input; None at the baseline
    bor: Category
    bor_rule: str = ""
    pd_date: date | None = None
    pd_index: int | None = None
    baseline_sum_mm: Decimal | None = None
    next_thresholds: tuple[Threshold, ...] = ()
    applicable: bool = True
    notes: tuple[str, ...] = ()

    def categories(self) -> list[Category | None]:
        return [tp.category if tp is not None else None for tp in self.timepoints]


@dataclass(frozen=True, slots=True)
class Alert:
    code: str
    timepoint: int | None
    severity: Severity
    message: str
    citation: str


@dataclass(frozen=True, slots=True)
class Assessment:
    results: tuple[CriterionResult, ...]
    alerts: tuple[Alert, ...] = ()
    # the time points as assessed: visit labels, dates and which one is the baseline (docs/criteria.md §1.6)
    labels: tuple[str, ...] = ()
    dates: tuple[Day, ...] = ()
    baseline_index: int = 0
    # the response split by site (docs/criteria.md §13), aligned with the time points (None before baseline)
    sites: tuple[SiteTimepoint | None, ...] = ()
    # tumour markers (docs/criteria.md §13.2): every series and its status at each follow-up
    markers: tuple[MarkerSeries, ...] = ()
    # metabolic response (docs/criteria.md §13.3): one result per follow-up PET
    metabolic: tuple[MetabolicResult, ...] = ()

    def get(self, criterion: Criterion) -> CriterionResult | None:
        for result in self.results:
            if result.criterion is criterion:
                return result
        return None
