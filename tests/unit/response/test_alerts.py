"""Alert rules of docs/criteria.md §9: each trigger, its boundary, and that alerts never change a response."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from series_factory import alert_codes, alert_keys, assess, case, lesion, timeline, visit

from agent.response import alerts
from agent.response.model import Alert, Criterion, Severity
from agent.response.parse import timeline_from_dict
from agent.response.table import assess_timeline, assessor

CRITERIA_DOC = Path(__file__).resolve().parents[3] / "docs" / "criteria.md"
GIST: dict[str, Any] = {"primary": "GIST", "therapy": ("imatinib",), "criteria": ("RECIST1.1", "Choi")}
IO: dict[str, Any] = {
    "primary": "melanoma",
    "therapy": ("pembrolizumab",),
    "criteria": ("RECIST1.1", "iRECIST"),
}


def t(lid: str, mm: float | str | None, **extra: Any) -> dict[str, Any]:
    return lesion(lid, mm, **extra)


def by_key(alist: tuple[Alert, ...], code: str, tp: int | None) -> Alert:
    return next(a for a in alist if a.code == code and a.timepoint == tp)


# -- catalogue -----------------------------------------------------------------------------------------


def _documented_alerts() -> dict[str, str]:
    """Code -> severity column of the alert tables in docs/criteria.md §9."""
    text = CRITERIA_DOC.read_text(encoding="utf-8")
    section = text[text.index("## 9. Alert catalogue") : text.index("## 10.")]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|[^|]*\| ([^|]*) \|([^|]*)\|$", section, flags=re.MULTILINE)
    assert all(message.strip().endswith(".") for _, _, message in rows)
    return {code: severity for code, severity, _ in rows}


def test_catalogue_holds_exactly_the_codes_of_the_criteria_reference() -> None:
    documented = _documented_alerts()
    assert len(documented) >= 30 and set(documented) == set(alerts.CATALOGUE)


def test_catalogue_severities_are_the_documented_ones() -> None:
    for code, severity in _documented_alerts().items():
        assert severity.startswith(alerts.CATALOGUE[code].severity.value), code


def test_every_alert_has_a_sentence_and_a_citation() -> None:
    a = assess(
        visit(t("T1", 9, locally_treated=True), slice_thickness_mm=7, days=-40),
        visit(t("T1", 0, status="disappeared"), modality="MR", days=200),
    )
    assert a.alerts
    for alert in a.alerts:
        assert alert.message.endswith(".") and len(alert.message) > 30
        assert alert.citation
        assert alert.severity in Severity


def test_one_alert_per_code_and_timepoint() -> None:
    merged = alerts.merge(
        [
            alerts.make_alert("TARGET_NOT_ASSESSED", 1, "T1 missing."),
            alerts.make_alert("TARGET_NOT_ASSESSED", 1, "T2 missing."),
            alerts.make_alert("TARGET_NOT_ASSESSED", 2, "T1 missing."),
        ]
    )
    assert [(a.code, a.timepoint) for a in merged] == [("TARGET_NOT_ASSESSED", 1), ("TARGET_NOT_ASSESSED", 2)]
    assert merged[0].message == "T1 missing. T2 missing."


def test_alerts_never_change_a_response() -> None:
    data = case(
        visit(t("T1", 50, mean_hu=80)),
        visit(t("T1", 62, mean_hu=40)),
        visit(t("T1", 70, mean_hu=70), t("X9", 20)),
        **GIST,
    )
    tl = timeline_from_dict(data)
    with_alerts = assess_timeline(tl)
    assert with_alerts.alerts
    for result in with_alerts.results:
        assert assessor(result.criterion)(tl) == result


# -- baseline ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("days", "code"), [(-28, None), (-29, "BASELINE_TOO_EARLY"), (0, None)])
def test_baseline_within_4_weeks(days: int, code: str | None) -> None:
    a = assess(visit(t("T1", 50), days=days), visit(t("T1", 50), days=56))
    found = alert_codes(a) & {"BASELINE_TOO_EARLY", "BASELINE_AFTER_TREATMENT_START"}
    assert found == ({code} if code else set())


def test_baseline_after_treatment_start_is_critical() -> None:
    a = assess(visit(t("T1", 50), days=1), visit(t("T1", 50), days=56))
    assert by_key(a.alerts, "BASELINE_AFTER_TREATMENT_START", 0).severity is Severity.CRITICAL


def test_baseline_missing_when_there_is_no_examination() -> None:
    tl = timeline(visit(t("T1", 50)))
    empty = type(tl)(context=tl.context, timepoints=(), options=tl.options)
    assert [a.code for a in alerts.evaluate(empty, ())] == ["BASELINE_MISSING"]


def test_no_baseline_disease() -> None:
    a = assess(visit(), visit())
    assert ("NO_BASELINE_DISEASE", 0) in alert_keys(a)
    assert "NO_BASELINE_DISEASE" not in alert_codes(assess(visit(t("T1", 50)), visit(t("T1", 50))))


@pytest.mark.parametrize(
    ("record", "slice_mm", "alert"),
    [
        (t("T1", 10), 5, False),
        (t("T1", "9.9"), 5, True),
        (t("T1", 14), 7, False),
        (t("T1", "13.9"), 7, True),
        (t("N1", 25, organ="lymph_node", is_node=True, short_axis_mm=15), 2.5, False),
        (t("N1", 25, organ="lymph_node", is_node=True, short_axis_mm="14.9"), 2.5, True),
        (t("N1", 25, organ="lymph_node", is_node=True, short_axis_mm=16), 8.5, True),
        (t("T1", None, status="too_small"), 2.5, True),
    ],
)
def test_target_measurability_at_baseline(record: dict[str, Any], slice_mm: float, alert: bool) -> None:
    a = assess(visit(record, slice_thickness_mm=slice_mm), visit(record))
    assert (("TARGET_NOT_MEASURABLE_AT_BASELINE", 0) in alert_keys(a)) is alert


def test_target_limits_five_in_total_two_per_organ_nodes_one_organ() -> None:
    six = [t(f"T{i}", 20, organ=f"organ{i}") for i in range(6)]
    assert ("TARGET_LIMITS_EXCEEDED", 0) in alert_keys(assess(visit(*six), visit(*six)))
    five = six[:5]
    assert "TARGET_LIMITS_EXCEEDED" not in alert_codes(assess(visit(*five), visit(*five)))
    nodes = [t(f"N{i}", 30, organ=f"station{i}", is_node=True, short_axis_mm=20) for i in range(3)]
    assert ("TARGET_LIMITS_EXCEEDED", 0) in alert_keys(assess(visit(*nodes), visit(*nodes)))


def test_locally_treated_target() -> None:
    a = assess(visit(t("T1", 30, locally_treated=True)), visit(t("T1", 30)))
    assert ("LOCALLY_TREATED_TARGET", 0) in alert_keys(a)


# -- comparability -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("slice_mm", "alert"), [(5, False), ("5.1", True)])
def test_slice_thickness_above_5mm(slice_mm: float | str, alert: bool) -> None:
    a = assess(visit(t("T1", 50)), visit(t("T1", 50), slice_thickness_mm=slice_mm))
    assert (("SLICE_THICKNESS_GT_5MM", 1) in alert_keys(a)) is alert


def test_modality_changed_names_the_ct_only_criteria() -> None:
    a = assess(visit(t("T1", 50, mean_hu=60)), visit(t("T1", 50), modality="MR"), **GIST)
    alert = by_key(a.alerts, "MODALITY_CHANGED", 1)
    assert "Choi" in alert.message and alert.severity is Severity.WARNING


def test_phase_mismatch_per_lesion() -> None:
    assert ("PHASE_MISMATCH", 1) in alert_keys(
        assess(visit(t("T1", 50)), visit(t("T1", 50, phase="arterial")))
    )
    assert "PHASE_MISMATCH" not in alert_codes(assess(visit(t("T1", 50)), visit(t("T1", 50))))


@pytest.mark.parametrize(("gap", "alert"), [(112, False), (113, True)])
def test_interval_too_long(gap: int, alert: bool) -> None:
    a = assess(visit(t("T1", 50), days=-7), visit(t("T1", 50), days=-7 + gap))
    assert (("INTERVAL_TOO_LONG", 1) in alert_keys(a)) is alert


def test_interval_option() -> None:
    a = assess(visit(t("T1", 50), days=-7), visit(t("T1", 50), days=53), options={"max_interval_days": 56})
    assert ("INTERVAL_TOO_LONG", 1) in alert_keys(a)


def test_disappeared_liver_lesion_on_ct_first_time_only() -> None:
    gone = t("T1", 0, status="disappeared")
    lung_gone = t("T2", 0, organ="lung", status="disappeared")
    a = assess(
        visit(t("T1", 20), t("T2", 20, organ="lung")),
        visit(gone, t("T2", 10, organ="lung")),
        visit(gone, lung_gone),
    )
    keys = alert_keys(a)
    assert ("DLM_CT_DISAPPEARED_LIVER_LESION", 1) in keys
    assert ("DLM_CT_DISAPPEARED_LIVER_LESION", 2) not in keys


def test_disappeared_liver_non_target_and_not_on_mr() -> None:
    nt = lesion("NT1", kind="non-target")
    nt_gone = lesion("NT1", kind="non-target", status="absent")
    assert ("DLM_CT_DISAPPEARED_LIVER_LESION", 1) in alert_keys(
        assess(visit(t("T1", 20), nt), visit(t("T1", 20), nt_gone))
    )
    mr = assess(visit(t("T1", 20), nt), visit(t("T1", 20), nt_gone, modality="MR"))
    assert "DLM_CT_DISAPPEARED_LIVER_LESION" not in alert_codes(mr)


# -- tracking and lesion records -----------------------------------------------------------------------


def test_tracking_mismatch_unknown_id_and_organ_change() -> None:
    a = assess(visit(t("T1", 40), t("T2", 30)), visit(t("T1", 40), t("T2", 30, organ="lung"), t("T3", 20)))
    alert = by_key(a.alerts, "LESION_TRACKING_MISMATCH", 1)
    assert "T3" in alert.message and "T2" in alert.message and alert.severity is Severity.CRITICAL


def test_new_lesion_previously_seen_and_equivocal() -> None:
    nt = lesion("NT1", kind="non-target")
    a = assess(
        visit(t("T1", 40), nt),
        visit(t("T1", 40), lesion("NT1", 12, kind="new"), lesion("N2", 6, kind="new", status="equivocal")),
        visit(t("T1", 40), nt, lesion("N3", 7, kind="new", prior_visible=True)),
    )
    keys = alert_keys(a)
    assert {
        ("NEW_LESION_PREVIOUSLY_SEEN", 1),
        ("NEW_LESION_PREVIOUSLY_SEEN", 2),
        ("NEW_LESION_EQUIVOCAL", 1),
    } <= keys


def test_target_not_assessed_missing_record_or_status() -> None:
    a = assess(
        visit(t("T1", 40), t("T2", 30)),
        visit(t("T1", 40)),
        visit(t("T1", 40), t("T2", None, status="not_assessed")),
        visit(t("T1", 40), t("T2", 30)),
    )
    keys = alert_keys(a)
    assert ("TARGET_NOT_ASSESSED", 1) in keys and ("TARGET_NOT_ASSESSED", 2) in keys
    assert ("TARGET_NOT_ASSESSED", 3) not in keys


# -- RECIST series -------------------------------------------------------------------------------------


def test_backdated_pd_and_post_pd() -> None:
    a = assess(
        visit(t("T1", 50)),
        visit(t("T1", 50), lesion("N1", 6, kind="new", status="equivocal")),
        visit(t("T1", 50), lesion("N1", 12, kind="new")),
        visit(t("T1", 50), lesion("N1", 15, kind="new")),
    )
    keys = alert_keys(a)
    assert ("PD_DATE_BACKDATED", 1) in keys and ("PD_DATE_BACKDATED", 2) not in keys
    assert {("POST_PD_TIMEPOINT", 2), ("POST_PD_TIMEPOINT", 3)} <= keys and (
        "POST_PD_TIMEPOINT",
        1,
    ) not in keys


def test_reappearance_after_cr_skips_ne_visits() -> None:
    a = assess(
        visit(t("T1", 20), t("T2", 15, organ="lung")),
        visit(t("T1", 0, status="disappeared"), t("T2", 0, organ="lung", status="disappeared")),
        visit(t("T1", None, status="not_assessed"), t("T2", 0, organ="lung", status="disappeared")),
        visit(t("T1", 4), t("T2", 0, organ="lung", status="disappeared")),
    )
    assert ("REAPPEARANCE_AFTER_CR", 3) in alert_keys(a)


def test_no_reappearance_alert_after_pr() -> None:
    nt = lesion("NT1", kind="non-target", organ="lung")
    a = assess(visit(t("T1", 20), nt), visit(t("T1", 0, status="disappeared"), nt), visit(t("T1", 6), nt))
    assert "REAPPEARANCE_AFTER_CR" not in alert_codes(a)


@pytest.mark.parametrize(
    ("series", "alert"),
    [
        ((100, 72), True),  # -28 %: 2 points from -30 %
        ((100, "72.1"), False),
        ((100, 68), True),  # -32 %
        ((100, "67.9"), False),
        ((25, 30), True),  # +20 %, +5 mm
        ((24, "29.4"), True),  # +22.5 %, +5.4 mm (within 1 mm of 5 mm)
        ((10, 16), True),  # +60 %, +6 mm: within 1 mm of the 5 mm rule
        ((10, "16.1"), False),
        ((50, 60), True),  # +20 % exactly, +10 mm
        ((50, 61), True),  # +22 %: 2 points from +20 %
        ((50, "61.1"), False),  # +22.2 %
        ((50, "56.2"), False),  # +12.4 %
    ],
)
def test_borderline_threshold(series: tuple[Any, Any], alert: bool) -> None:
    a = assess(visit(t("T1", series[0])), visit(t("T1", series[1])))
    assert (("BORDERLINE_THRESHOLD", 1) in alert_keys(a)) is alert


def test_borderline_function_against_zero_nadir_and_cr() -> None:
    a = assess(
        visit(t("T1", 20), lesion("NT1", kind="non-target", organ="lung")),
        visit(t("T1", 0, status="disappeared"), lesion("NT1", kind="non-target", organ="lung")),
        visit(t("T1", 4), lesion("NT1", kind="non-target", organ="lung")),
    )
    keys = alert_keys(a)
    assert ("BORDERLINE_THRESHOLD", 1) not in keys  # target CR is never borderline
    assert ("BORDERLINE_THRESHOLD", 2) in keys  # 4 mm against a nadir of 0: 1 mm from the 5 mm rule


def test_borderline_options() -> None:
    a = assess(visit(t("T1", 100)), visit(t("T1", 74)), options={"borderline_pp": 4})
    assert ("BORDERLINE_THRESHOLD", 1) in alert_keys(a)  # -26 % with 4 points of tolerance
    b = assess(visit(t("T1", 10)), visit(t("T1", "16.5")), options={"borderline_mm": "1.5"})
    assert ("BORDERLINE_THRESHOLD", 1) in alert_keys(b)  # +6.5 mm with 1.5 mm of tolerance


# -- iRECIST -------------------------------------------------------------------------------------------


def _io(*sizes_days: tuple[int, int], **extra: Any) -> Any:
    return assess(*[visit(t("T1", s), days=d) for s, d in sizes_days], **{**IO, **extra})


def test_first_iupd_with_recist_pd_and_confirmation() -> None:
    a = _io((50, -7), (60, 49), (66, 91))
    keys = alert_keys(a)
    assert ("DISC_IRECIST_IUPD_RECIST_PD", 1) in keys
    assert ("DISC_IRECIST_IUPD_RECIST_PD", 2) not in keys
    assert "IRECIST_CONFIRMATION_OUTSIDE_WINDOW" not in alert_codes(a)  # 42 days


@pytest.mark.parametrize(("gap", "alert"), [(25, True), (26, False), (58, False), (59, True)])
def test_irecist_confirmation_window_with_2_days_tolerance(gap: int, alert: bool) -> None:
    a = _io((50, -7), (60, 49), (60, 49 + gap))
    assert (("IRECIST_CONFIRMATION_OUTSIDE_WINDOW", 2) in alert_keys(a)) is alert


def test_pseudoprogression_after_iupd_skipping_ne() -> None:
    a = assess(
        visit(t("T1", 50), t("T2", 20, organ="lung")),
        visit(t("T1", 70), t("T2", 20, organ="lung"), days=49),
        visit(t("T1", 70), t("T2", None, organ="lung", status="not_assessed"), days=91),
        visit(t("T1", 30), t("T2", 10, organ="lung"), days=133),
        **IO,
    )
    keys = alert_keys(a)
    assert ("DISC_PSEUDOPROGRESSION", 3) in keys and ("DISC_PSEUDOPROGRESSION", 2) not in keys


def test_irecist_alerts_need_irecist_requested() -> None:
    a = _io((50, -7), (60, 49), (30, 63), criteria=("RECIST1.1",))
    assert not {c for c in alert_codes(a) if "IRECIST" in c or c == "DISC_PSEUDOPROGRESSION"}


# -- Choi, ancillary -----------------------------------------------------------------------------------


def _choi(before: tuple[Any, Any], after: tuple[Any, Any], **kw: Any) -> Any:
    return assess(
        visit(t("T1", before[0], mean_hu=before[1])),
        visit(t("T1", after[0], mean_hu=after[1])),
        **{**GIST, **kw},
    )


def test_choi_discordance_alerts() -> None:
    assert ("DISC_RECIST_PD_CHOI_PR", 1) in alert_keys(_choi((50, 80), (62, 40)))
    assert ("DISC_RECIST_SD_CHOI_PR", 1) in alert_keys(_choi((80, 100), (80, 85)))
    assert ("DISC_CHOI_PD_RECIST_NOT_PD", 1) in alert_keys(_choi((50, 60), (55, 57)))
    assert by_key(_choi((50, 80), (62, 40)).alerts, "DISC_RECIST_PD_CHOI_PR", 1).severity is Severity.CRITICAL


def test_choi_discordance_only_for_requested_criteria() -> None:
    tl = timeline(visit(t("T1", 50, mean_hu=80)), visit(t("T1", 62, mean_hu=40)), primary="GIST")
    a = assess_timeline(tl, [Criterion.RECIST, Criterion.CHOI])
    assert not {c for c in alert_codes(a) if c.startswith("DISC_")}


def test_mchoi_discordance_when_choi_not_requested() -> None:
    a = _choi((80, 100), (70, 80), criteria=("RECIST1.1", "mChoi"), primary="RCC")
    assert ("DISC_RECIST_SD_CHOI_PR", 1) in alert_keys(a)
    assert "CRITERION_OUTSIDE_VALIDATED_SETTING" not in alert_codes(a)


def test_choi_density_not_evaluable_unless_cr_or_pd() -> None:
    a = assess(visit(t("T1", 50, mean_hu=70)), visit(t("T1", 44, mean_hu=120, phase="arterial")), **GIST)
    assert ("CHOI_DENSITY_NOT_EVALUABLE", 1) in alert_keys(a)
    new = lesion("N1", 12, kind="new")
    pd = assess(visit(t("T1", 50, mean_hu=70)), visit(t("T1", 44, phase="arterial"), new), **GIST)
    assert "CHOI_DENSITY_NOT_EVALUABLE" not in alert_codes(pd)


def test_attenuation_drop_with_stable_size() -> None:
    a = assess(visit(t("T1", 50, mean_hu=80)), visit(t("T1", 50, mean_hu=68)))
    assert ("ANC_ATTENUATION_DROP_SIZE_STABLE", 1) in alert_keys(a)
    small_drop = assess(visit(t("T1", 50, mean_hu=80)), visit(t("T1", 50, mean_hu="68.1")))
    assert "ANC_ATTENUATION_DROP_SIZE_STABLE" not in alert_codes(small_drop)


def test_ancillary_attenuation_needs_comparable_ct_and_no_choi() -> None:
    other_phase = assess(visit(t("T1", 50, mean_hu=80)), visit(t("T1", 50, mean_hu=60), phase="arterial"))
    assert "ANC_ATTENUATION_DROP_SIZE_STABLE" not in alert_codes(other_phase)
    with_choi = _choi((50, 80), (50, 60))
    assert "ANC_ATTENUATION_DROP_SIZE_STABLE" not in alert_codes(with_choi)


def test_size_up_attenuation_down_only_for_target_driven_pd() -> None:
    a = assess(visit(t("T1", 40, mean_hu=80)), visit(t("T1", 50, mean_hu=50)))
    assert ("ANC_SIZE_UP_ATTENUATION_DOWN", 1) in alert_keys(a)
    new = lesion("N1", 12, kind="new")
    b = assess(visit(t("T1", 40, mean_hu=80)), visit(t("T1", 50, mean_hu=50), new))
    assert "ANC_SIZE_UP_ATTENUATION_DOWN" not in alert_codes(b)


def test_ancillary_morphologic_signs_with_sd_or_pd() -> None:
    a = assess(visit(t("T1", 50)), visit(t("T1", 48, ancillary=["necrosis", "calcification"])))
    alert = by_key(a.alerts, "ANC_MORPHOLOGIC_RESPONSE_SIGNS", 1)
    assert "necrosis" in alert.message and alert.severity is Severity.INFO
    pr = assess(visit(t("T1", 50)), visit(t("T1", 30, ancillary=["necrosis"])))
    assert "ANC_MORPHOLOGIC_RESPONSE_SIGNS" not in alert_codes(pr)


# -- Chun, mRECIST, applicability ----------------------------------------------------------------------

CRLM: dict[str, Any] = {
    "primary": "CRC",
    "therapy": ("FOLFOX", "bevacizumab"),
    "criteria": ("RECIST1.1", "Chun"),
}


def test_chun_discordance_alerts() -> None:
    sd_opt = assess(visit(t("T1", 40, chun_group=3)), visit(t("T1", 38, chun_group=1)), **CRLM)
    assert ("DISC_RECIST_SD_CHUN_OPTIMAL", 1) in alert_keys(sd_opt)
    pd_opt = assess(visit(t("T1", 40, chun_group=3)), visit(t("T1", 50, chun_group=1)), **CRLM)
    assert ("DISC_RECIST_PD_CHUN_OPTIMAL", 1) in alert_keys(pd_opt)
    pr_none = assess(visit(t("T1", 40, chun_group=3)), visit(t("T1", 20, chun_group=3)), **CRLM)
    assert ("DISC_RECIST_RESPONSE_CHUN_NONE", 1) in alert_keys(pr_none)
    assert "CRITERION_OUTSIDE_VALIDATED_SETTING" not in alert_codes(pr_none)


def test_chun_modality_alert() -> None:
    a = assess(visit(t("T1", 40, chun_group=3)), visit(t("T1", 38, chun_group=1), modality="MR"), **CRLM)
    assert {("CHUN_NOT_EVALUABLE_MODALITY", 1), ("MODALITY_CHANGED", 1)} <= alert_keys(a)


HCC: dict[str, Any] = {"primary": "HCC", "therapy": ("sorafenib",), "criteria": ("RECIST1.1", "mRECIST")}


def test_mrecist_discordance_severity() -> None:
    def viable(total: float, long: float) -> dict[str, Any]:
        return t("T1", total, viable_long_axis_mm=long, viable_perp_axis_mm=long)

    info = assess(visit(viable(40, 40)), visit(viable(42, 20)), **HCC)
    assert by_key(info.alerts, "DISC_MRECIST_RECIST", 1).severity is Severity.INFO
    warning = assess(visit(viable(40, 20)), visit(viable(42, 25)), **HCC)  # mRECIST PD, RECIST SD
    assert by_key(warning.alerts, "DISC_MRECIST_RECIST", 1).severity is Severity.WARNING
    same = assess(visit(viable(40, 40)), visit(viable(41, 41)), **HCC)
    assert "DISC_MRECIST_RECIST" not in alert_codes(same)


def test_applicability_alerts() -> None:
    not_hcc = assess(visit(t("T1", 40)), visit(t("T1", 40)), criteria=("RECIST1.1", "EASL"))
    assert ("CRITERION_NOT_APPLICABLE", 0) in alert_keys(not_hcc)
    choi_crc = assess(visit(t("T1", 40)), visit(t("T1", 40)), criteria=("RECIST1.1", "Choi"))
    assert ("CRITERION_OUTSIDE_VALIDATED_SETTING", 0) in alert_keys(choi_crc)
    choi_gist = assess(visit(t("T1", 40)), visit(t("T1", 40)), **GIST)
    assert "CRITERION_OUTSIDE_VALIDATED_SETTING" not in alert_codes(choi_gist)
    chun_no_bev = assess(visit(t("T1", 40)), visit(t("T1", 40)), criteria=("RECIST1.1", "Chun"))
    assert ("CRITERION_OUTSIDE_VALIDATED_SETTING", 0) in alert_keys(chun_no_bev)


def test_measurability_threshold_function() -> None:
    tl = timeline(visit(t("T1", 40), t("N1", 30, is_node=True, short_axis_mm=20)))
    t1, n1 = tl.baseline.lesions
    assert alerts.measurability_threshold(t1, None) == 10
    assert alerts.measurability_threshold(t1, Decimal("6")) == 12
    assert alerts.measurability_threshold(n1, Decimal("6")) == 15
    assert alerts.measurability_threshold(n1, Decimal("8")) == 16
