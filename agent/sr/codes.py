"""Every coded concept the SR layer looks for (and, later, emits), in one place.

Codes are :class:`pydicom.sr.coding.Code` objects. Their equality maps retired SNOMED-RT (``SRT``) codes to
their SNOMED CT (``SCT``) equivalents, so ``Code("G-A185", "SRT", ...) == LONG_AXIS``; compare with ``==`` or
:func:`matches`, never with raw strings, and never on the code meaning (meanings are localised or wrong in
real files). Retired codes that pydicom's mapping does not know are listed explicitly as alternatives.

The groups follow PS3.16: document structure (TID 1500), measurement group context (TID 1501/1410/1411),
measurements (CID 7470/7469), derivations (CID 7464), time point context (TID 1502), lesion roles (CID 6145),
units (UCUM), plus the private concepts of writers seen in the wild (NCI AIM) and our own private scheme.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.sr.coding import Code

__all__ = ["Code", "matches"]


def matches(code: Code | None, candidates: Code | Iterable[Code]) -> bool:
    """True if ``code`` equals ``candidates`` (or one of them), SRT and SCT treated alike."""
    if code is None:
        return False
    if isinstance(candidates, Code):
        return bool(code == candidates)
    return any(bool(code == c) for c in candidates)


# --- Document structure (TID 1500, TID 1600) -------------------------------------------------------------
IMAGING_MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")
ONCOLOGY_MEASUREMENT_REPORT = Code("126001", "DCM", "Oncology Measurement Report")
REPORT_TITLES = (IMAGING_MEASUREMENT_REPORT, ONCOLOGY_MEASUREMENT_REPORT)
IMAGING_MEASUREMENTS = Code("126010", "DCM", "Imaging Measurements")
DERIVED_IMAGING_MEASUREMENTS = Code("126011", "DCM", "Derived Imaging Measurements")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
MEASUREMENT_GROUP = Code("125007", "DCM", "Measurement Group")
IMAGE_LIBRARY = Code("111028", "DCM", "Image Library")
IMAGE_LIBRARY_GROUP = Code("126200", "DCM", "Image Library Group")
PROCEDURE_REPORTED = Code("121058", "DCM", "Procedure reported")
STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
SERIES_INSTANCE_UID = Code("112002", "DCM", "Series Instance UID")
STUDY_DATE = Code("111060", "DCM", "Study Date")
MODALITY = Code("121139", "DCM", "Modality")
SLICE_THICKNESS = Code("112225", "DCM", "Slice Thickness")

# --- Measurement group context (TID 1501 / 1410 / 1411, TID 1419) -----------------------------------------
TRACKING_IDENTIFIER = Code("112039", "DCM", "Tracking Identifier")
TRACKING_UID = Code("112040", "DCM", "Tracking Unique Identifier")
ACTIVITY_SESSION = Code("C67447", "NCIt", "Activity Session")
FINDING = Code("121071", "DCM", "Finding")
FINDING_CATEGORY = Code("276214006", "SCT", "Finding category")
FINDING_SITE = Code("363698007", "SCT", "Finding Site")
FINDING_SITES = (FINDING_SITE, Code("G-C0E3", "SRT", "Finding Site"))
LATERALITY = Code("272741003", "SCT", "Laterality")
TOPOGRAPHICAL_MODIFIER = Code("106233006", "SCT", "Topographical modifier")
MEASUREMENT_METHOD = Code("370129005", "SCT", "Measurement Method")
MEASUREMENT_METHODS = (MEASUREMENT_METHOD, Code("G-C036", "SRT", "Measurement Method"))
DERIVATION = Code("121401", "DCM", "Derivation")
IMAGE_REGION = Code("111030", "DCM", "Image Region")
VOLUME_SURFACE = Code("121231", "DCM", "Volume Surface")
REFERENCED_SEGMENT = Code("121191", "DCM", "Referenced Segment")
SOURCE_IMAGE_FOR_SEGMENTATION = Code("121233", "DCM", "Source image for segmentation")
SOURCE_SERIES_FOR_SEGMENTATION = Code("121232", "DCM", "Source series for segmentation")
SOURCE_OF_MEASUREMENT = Code("121112", "DCM", "Source of Measurement")

# Finding values: what makes a group a lesion rather than an anatomical measurement.
LESION = Code("52988006", "SCT", "Lesion")
NODULE = Code("27925004", "SCT", "Nodule")
MASS = Code("4147007", "SCT", "Mass")
NEOPLASM = Code("108369006", "SCT", "Neoplasm")
NEOPLASM_PRIMARY = Code("86049000", "SCT", "Neoplasm, Primary")
NEOPLASM_SECONDARY = Code("14799000", "SCT", "Neoplasm, Metastatic")
LESION_FINDINGS = (LESION, NODULE, MASS, NEOPLASM, NEOPLASM_PRIMARY, NEOPLASM_SECONDARY)
LYMPH_NODE = Code("59441001", "SCT", "Lymph node")
ENLARGED_LYMPH_NODE = Code("30746006", "SCT", "Lymphadenopathy")
NODE_FINDINGS = (LYMPH_NODE, ENLARGED_LYMPH_NODE)
# A finding category saying the group measures normal anatomy, not a lesion.
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical structure")

# --- Measurements (CID 7470 linear, CID 7469 generic) ------------------------------------------------------
LONG_AXIS = Code("103339001", "SCT", "Long axis")  # SRT G-A185
SHORT_AXIS = Code("103340004", "SCT", "Short axis")  # SRT G-A186
DIAMETER = Code("81827009", "SCT", "Diameter")
LENGTH = Code("410668003", "SCT", "Length")  # SRT G-D7FE (dcmjs also labels areas with it)
MAJOR_AXIS = Code("131187009", "SCT", "Major Axis")
MINOR_AXIS = Code("131188004", "SCT", "Minor Axis")
PERPENDICULAR_AXIS = Code("131189007", "SCT", "Perpendicular Axis")
AREA = Code("42798000", "SCT", "Area")
AREA_OF_DEFINED_REGION = Code("131184002", "SCT", "Area of defined region")  # SRT G-A16A
VOLUME = Code("118565006", "SCT", "Volume")  # SRT G-D705
LONG_AXIS_NAMES = (LONG_AXIS,)
SHORT_AXIS_NAMES = (SHORT_AXIS,)
# A single linear size: used as the long axis when no long axis is given.
LENGTH_NAMES = (DIAMETER, LENGTH, MAJOR_AXIS)
# Used as the short axis when no short axis is given.
PERPENDICULAR_NAMES = (PERPENDICULAR_AXIS, MINOR_AXIS)
AREA_NAMES = (AREA, AREA_OF_DEFINED_REGION)
VOLUME_NAMES = (VOLUME,)
# Measurement methods saying an otherwise unnamed value is a length (AIM "Calculation" containers).
LENGTH_METHODS = (LENGTH, Code("G-A22A", "SRT", "Length"))

# Attenuation: TID 1419 "NUM + Derivation" pattern, and the alternatives seen in real files.
ATTENUATION_COEFFICIENT = Code("112031", "DCM", "Attenuation Coefficient")
MEAN_ATTENUATION_COEFFICIENT = Code("112181", "DCM", "Mean Attenuation Coefficient")
INTENSITY_HISTOGRAM_MEAN = Code("X6K6", "IBSI", "Intensity Histogram Mean")
PIXEL_BY_PIXEL_MEAN = Code("113049", "DCM", "Pixel by pixel mean")
# Names that are a mean by themselves (no Derivation needed) when the unit is HU.
MEAN_INTENSITY_NAMES = (
    MEAN_ATTENUATION_COEFFICIENT,
    INTENSITY_HISTOGRAM_MEAN,
    PIXEL_BY_PIXEL_MEAN,
    Code("373098007", "SCT", "Mean"),  # Cornerstone3D/dcmjs ROI statistics: NUM "Mean" in HU
)

# Derivations (CID 7464)
MEAN = Code("373098007", "SCT", "Mean")  # SRT R-00317
MAXIMUM = Code("56851009", "SCT", "Maximum")
MINIMUM = Code("255605001", "SCT", "Minimum")
STANDARD_DEVIATION = Code("386136009", "SCT", "Standard Deviation")
MEDIAN = Code("373099004", "SCT", "Median")

# --- Time point context (TID 1502) --------------------------------------------------------------------------
SUBJECT_TIME_POINT_IDENTIFIER = Code("126070", "DCM", "Subject Time Point Identifier")
PROTOCOL_TIME_POINT_IDENTIFIER = Code("126071", "DCM", "Protocol Time Point Identifier")
TIME_POINT = Code("C2348792", "UMLS", "Time Point")
TIME_POINT_TYPE = Code("126072", "DCM", "Time Point Type")
TIME_POINT_ORDER = Code("126073", "DCM", "Time Point Order")
TIME_POINT_CONTEXT_NAMES = (
    SUBJECT_TIME_POINT_IDENTIFIER,
    PROTOCOL_TIME_POINT_IDENTIFIER,
    TIME_POINT,
    TIME_POINT_TYPE,
    TIME_POINT_ORDER,
)
# Time Point Type values (CID 6146)
BASELINE = Code("C1442488", "UMLS", "Baseline")
NADIR = Code("C1708760", "UMLS", "Nadir")
POSTTREATMENT = Code("126074", "DCM", "Posttreatment")
PRETREATMENT = Code("C3539075", "UMLS", "Pretreatment")
UNSCHEDULED = Code("C1699701", "UMLS", "Unscheduled")

# --- Lesion roles ------------------------------------------------------------------------------------------
BASELINE_CATEGORY = Code("112016", "DCM", "Baseline Category")
TARGET_LESION_AT_BASELINE = Code("112074", "DCM", "Target Lesion at Baseline")
NON_TARGET_LESION_AT_BASELINE = Code("112075", "DCM", "Non-Target Lesion at Baseline")
NON_LESION_AT_BASELINE = Code("112076", "DCM", "Non-Lesion at Baseline")

# Our private scheme (declared in CodingSchemeIdentificationSequence of the SRs we write): the per-time-point
# role and status of a lesion (docs/criteria.md §1.2 ``kind`` and ``status``), which DICOM has no codes for.
PRIVATE_SCHEME = "99LIVERAGENT"
LESION_ROLE = Code("LA-ROLE", PRIVATE_SCHEME, "Lesion role")
ROLE_TARGET = Code("LA-ROLE-T", PRIVATE_SCHEME, "Target lesion")
ROLE_NON_TARGET = Code("LA-ROLE-NT", PRIVATE_SCHEME, "Non-target lesion")
ROLE_NEW = Code("LA-ROLE-N", PRIVATE_SCHEME, "New lesion")
ROLES = {"target": ROLE_TARGET, "non-target": ROLE_NON_TARGET, "new": ROLE_NEW}
LESION_STATUS = Code("LA-STATUS", PRIVATE_SCHEME, "Lesion status")
# Status values use the docs/criteria.md §1.2 word as code value,
# e.g. Code("disappeared", PRIVATE_SCHEME, "disappeared").

# --- Units (UCUM) -------------------------------------------------------------------------------------------
UCUM = "UCUM"
# Code value -> factor to millimetres (lengths), mm² (areas), mm³ (volumes).
LENGTH_UNITS_MM = {"mm": 1.0, "cm": 10.0, "um": 0.001, "m": 1000.0}
AREA_UNITS_MM2 = {"mm2": 1.0, "cm2": 100.0}
VOLUME_UNITS_MM3 = {"mm3": 1.0, "cm3": 1000.0, "ml": 1000.0, "mL": 1000.0}
HOUNSFIELD_UNITS = ("[hnsf'U]", "HU")
# Units that say the value is not in physical space: never converted.
PIXEL_UNITS = ("px", "{pixels}", "pixels", "1")

# --- Writers' private concepts ------------------------------------------------------------------------------
# NCI AIM Toolkit "AIM DICOM SR" (no template id; samples 11-14).
AIM_SCHEME = "99NCIAIM"
AIM_REPORT = Code("zzz001", AIM_SCHEME, "AIM SR Report")
AIM_ANNOTATION = Code("zzz002", AIM_SCHEME, "AIM Annotation")
AIM_CALCULATION = Code("zzz011", AIM_SCHEME, "Calculation")
AIM_CALCULATION_RESULT = Code("zzz015", AIM_SCHEME, "Calculation Result")
AIM_ANATOMIC_ENTITY = Code("zzz004", AIM_SCHEME, "Anatomic Entity")

# --- Organs: finding site -> docs/criteria.md §1.2 ``organ`` --------------------------------------------
# All lymph nodes form one organ for the "2 per organ" rule.
ORGANS: tuple[tuple[Code, str], ...] = (
    (Code("10200004", "SCT", "Liver"), "liver"),
    (Code("39607008", "SCT", "Lung"), "lung"),
    (LYMPH_NODE, "lymph_node"),
    (Code("23451007", "SCT", "Adrenal gland"), "adrenal"),
    (Code("272673000", "SCT", "Bone"), "bone"),
    (Code("15425007", "SCT", "Peritoneum"), "peritoneum"),
    (Code("78961009", "SCT", "Spleen"), "spleen"),
    (Code("64033007", "SCT", "Kidney"), "kidney"),
    (Code("15776009", "SCT", "Pancreas"), "pancreas"),
    (Code("12738006", "SCT", "Brain"), "brain"),
    (Code("69536005", "SCT", "Head"), "head"),
    (Code("3120008", "SCT", "Pleura"), "pleura"),
    (Code("71854001", "SCT", "Colon"), "colon"),
    (Code("69695003", "SCT", "Stomach"), "stomach"),
)

# --- Response report: concepts the response SR (agent/sr/write.py) emits ------------------------------------
# Standard concepts (PS3.16 Annex D; CID 6147 response criteria, CID 6143/6144 lesion responses).
CT_UNSPECIFIED_BODY_REGION = Code("25045-6", "LN", "CT unspecified body region")  # CID 100
MR_UNSPECIFIED_BODY_REGION = Code("25056-3", "LN", "MRI unspecified body region")  # CID 100
PET_UNSPECIFIED_BODY_REGION = Code("44136-0", "LN", "PET unspecified body region")  # CID 100
DEVICE = Code("121007", "DCM", "Device")  # Observer Type
COMMENT = Code("121106", "DCM", "Comment")
RESPONSE_EVALUATION_METHOD = Code("112021", "DCM", "Response Evaluation Method")
CURRENT_RESPONSE = Code("112048", "DCM", "Current Response")
BEST_OVERALL_RESPONSE = Code("112049", "DCM", "Best Overall Response")
MEASUREMENT_OF_RESPONSE = Code("112051", "DCM", "Measurement of Response")  # the sum of target diameters
RECIST_1_1 = Code("126081", "DCM", "RECIST 1.1")  # CID 6147
TARGET_LESION_CR = Code("112041", "DCM", "Target Lesion Complete Response")  # CID 6143/6144
TARGET_LESION_PR = Code("112042", "DCM", "Target Lesion Partial Response")
TARGET_LESION_PD = Code("112043", "DCM", "Target Lesion Progressive Disease")
TARGET_LESION_SD = Code("112044", "DCM", "Target Lesion Stable Disease")
NON_TARGET_LESION_CR = Code("112045", "DCM", "Non-Target Lesion Complete Response")
NON_TARGET_LESION_NON_CR_NON_PD = Code(
    "112046", "DCM", "Non-Target Lesion Incomplete Response or Stable Disease"
)
NON_TARGET_LESION_PD = Code("112047", "DCM", "Non-Target Lesion Progressive Disease")
#: docs/criteria.md §1.7 category value -> CID 6144 code, for the target and the non-target sub-response.
TARGET_RESPONSE_CODES = {
    "CR": TARGET_LESION_CR,
    "PR": TARGET_LESION_PR,
    "SD": TARGET_LESION_SD,
    "PD": TARGET_LESION_PD,
}
NON_TARGET_RESPONSE_CODES = {
    "CR": NON_TARGET_LESION_CR,
    "NON_CR_NON_PD": NON_TARGET_LESION_NON_CR_NON_PD,
    "PD": NON_TARGET_LESION_PD,
}
PERCENT = Code("%", UCUM, "percent")
MILLIMETER = Code("mm", UCUM, "millimeter")
SQUARE_MILLIMETER = Code("mm2", UCUM, "square millimeter")
HOUNSFIELD_UNIT = Code("[hnsf'U]", UCUM, "Hounsfield unit")

# Ours (PRIVATE_SCHEME, declared in the Coding Scheme Identification Sequence of every SR we write): DICOM has
# no codes for these criteria, their categories, the per-criterion sub-responses or our alerts.
PRIVATE_SCHEME_NAME = "liver-agent tumour response concepts"
CRITERION_CODES = {  # Response Evaluation Method values; RECIST 1.1 is the standard code above
    "RECIST1.1": RECIST_1_1,
    "iRECIST": Code("LA-IRECIST", PRIVATE_SCHEME, "iRECIST"),  # ours
    "Choi": Code("LA-CHOI", PRIVATE_SCHEME, "Choi criteria"),  # ours
    "mChoi": Code("LA-MCHOI", PRIVATE_SCHEME, "Modified Choi criteria"),  # ours
    "mRECIST": Code("LA-MRECIST", PRIVATE_SCHEME, "mRECIST"),  # ours
    "EASL": Code("LA-EASL", PRIVATE_SCHEME, "EASL criteria"),  # ours
    "Chun": Code("LA-CHUN", PRIVATE_SCHEME, "Chun morphologic criteria"),  # ours
}
TARGET_RESPONSE = Code("LA-RESP-T", PRIVATE_SCHEME, "Target lesion response")  # ours
NON_TARGET_RESPONSE = Code("LA-RESP-NT", PRIVATE_SCHEME, "Non-target lesion response")  # ours
NEW_LESIONS = Code("LA-NEW", PRIVATE_SCHEME, "Unequivocal new lesion")  # ours; value YES / NO below
YES = Code("LA-YES", PRIVATE_SCHEME, "Yes")  # ours
NO = Code("LA-NO", PRIVATE_SCHEME, "No")  # ours
RESPONSE_RULE = Code("LA-RULE", PRIVATE_SCHEME, "Rule applied")  # ours: TEXT, why the category was reached
RESPONSE_EXPLANATION = Code("LA-WHY", PRIVATE_SCHEME, "Response explanation")  # ours: TEXT, figures
#: docs/criteria.md §1.7 category value -> our code (no DICOM codes exist for overall time-point categories).
CATEGORY_CODES = {
    value: Code(code_value, PRIVATE_SCHEME, meaning)  # ours
    for value, code_value, meaning in (
        ("CR", "LA-CAT-CR", "Complete response"),
        ("PR", "LA-CAT-PR", "Partial response"),
        ("SD", "LA-CAT-SD", "Stable disease"),
        ("PD", "LA-CAT-PD", "Progressive disease"),
        ("NE", "LA-CAT-NE", "Not evaluable"),
        ("NON_CR_NON_PD", "LA-CAT-NN", "Non-CR/non-PD"),
        ("NA", "LA-CAT-NA", "Not applicable"),
        ("NONE", "LA-CAT-NONE", "No lesions of this kind"),
        ("iCR", "LA-CAT-ICR", "iRECIST complete response"),
        ("iPR", "LA-CAT-IPR", "iRECIST partial response"),
        ("iSD", "LA-CAT-ISD", "iRECIST stable disease"),
        ("iNN", "LA-CAT-INN", "iRECIST non-iCR/non-iUPD"),
        ("iUPD", "LA-CAT-IUPD", "iRECIST unconfirmed progression"),
        ("iCPD", "LA-CAT-ICPD", "iRECIST confirmed progression"),
        ("optimal", "LA-CAT-OPT", "Optimal morphologic response"),
        ("incomplete", "LA-CAT-INC", "Incomplete morphologic response"),
        ("none", "LA-CAT-NORESP", "No morphologic response"),
    )
}
# Sum group (a TID 1501 group of its own) and the thresholds of the next read.
TARGET_SUM_FINDING = Code("LA-SUM", PRIVATE_SCHEME, "Sum of target lesion diameters")  # ours (Finding)
CHANGE_VS_BASELINE = Code("LA-PCT-BL", PRIVATE_SCHEME, "Change of the target sum from baseline")  # ours, %
CHANGE_VS_NADIR = Code("LA-PCT-NADIR", PRIVATE_SCHEME, "Change of the target sum from nadir")  # ours, %
PD_THRESHOLD = Code("LA-PD-AT", PRIVATE_SCHEME, "Target sum giving progressive disease")  # ours, mm
PR_THRESHOLD = Code("LA-PR-AT", PRIVATE_SCHEME, "Target sum giving partial response")  # ours, mm
NEXT_THRESHOLD = Code("LA-NEXT", PRIVATE_SCHEME, "Threshold for the next category")  # ours: TEXT
LESION_SUMMARY = Code("LA-ROW", PRIVATE_SCHEME, "Lesion table row")  # ours: TEXT, one lesion over time
RESPONSE_SUMMARY_NAMES = (
    MEASUREMENT_OF_RESPONSE,
    CHANGE_VS_BASELINE,
    CHANGE_VS_NADIR,
    PD_THRESHOLD,
    PR_THRESHOLD,
)
# Alerts: TEXT (message) with a TEXT code and a CODE severity as modifiers.
ALERT = Code("LA-ALERT", PRIVATE_SCHEME, "Response alert")  # ours
ALERT_CODE = Code("LA-ALERT-CODE", PRIVATE_SCHEME, "Alert code")  # ours
ALERT_SEVERITY = Code("LA-SEVERITY", PRIVATE_SCHEME, "Alert severity")  # ours
SEVERITY_CODES = {
    "critical": Code("LA-SEV-CRIT", PRIVATE_SCHEME, "Critical"),  # ours
    "warning": Code("LA-SEV-WARN", PRIVATE_SCHEME, "Warning"),  # ours
    "info": Code("LA-SEV-INFO", PRIVATE_SCHEME, "Information"),  # ours
}
# Document kind: a pre-read (priors only, thresholds for the current read) or a response report.
REPORT_KIND = Code("LA-KIND", PRIVATE_SCHEME, "Response report kind")  # ours
PRE_READ = Code("LA-PRE-READ", PRIVATE_SCHEME, "Pre-read: prior measurements only")  # ours
RESPONSE_READ = Code("LA-RESPONSE", PRIVATE_SCHEME, "Response at the current time point")  # ours


# --- Viewer labels (OHIF / Cornerstone / dcmjs) ----------------------------------------------------------
# The radiologist's label: a TEXT "Comment" in the group (Cornerstone3D adapters), or the meaning of a
# free-text finding / finding site code (older dcmjs and cornerstoneTools writers). Matched on the code
# value whatever the scheme (CST4, CORNERSTONEJS, 99dcmjs).
COMMENT = Code("121106", "DCM", "Comment")
FREE_TEXT_CODE_VALUES = ("CORNERSTONEFREETEXT", "CS3DTEXT")
# Tracking Identifiers that name the drawing tool, not the lesion ("Cornerstone3DTools@^0.1.0:Bidirectional",
# "cornerstoneTools@^4.0.0:Length", "dcmjs@...:..."): the same text for every annotation of that tool.
TOOL_NAME_IDENTIFIER = r"^\s*(cornerstone3dtools|cornerstonetools|dcmjs|ohif)[^:\s]*@[^:\s]*:"
