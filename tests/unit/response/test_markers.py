"""Tumour markers beside RECIST 1.1 (docs/criteria.md §13.2): thresholds, windows and the discordance alerts.

Thresholds: response = a fall >= 50 % from a pre-treatment value >= 2 x ULN (GCIG CA-125 response, Rustin
GJS et al. J Natl Cancer Inst 2004;96:487-488); progression = a rise >= 25 % over the nadir (PCWG2, Scher HI
et al. J Clin Oncol 2008;26:1148-1159) and above the ULN. The CEA case follows the pattern of a CEA flare
against a responding tumour and of falling CEA with pseudoprogression discussed in the ASCO 2006 tumour
marker guidance (Locker GY et al. J Clin Oncol 2006;24:5313-5327); the figures are chosen on the
thresholds, not copied from a patient.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from recist_factories import START, case, target

from agent.response.markers import MarkerCategory, unit_key
from agent.response.model import Marker
from agent.response.parse import ValidationError, assessment_to_dict, marker_lines, timeline_from_dict
from agent.response.table import assess_timeline


def cea(
    days: int, value: float | str, unit: str = "ng/mL", uln: float | None = 5, **kw: Any
) -> dict[str, Any]:
    return {
        "marker": kw.pop("marker", "CEA"),
        "date": (START + timedelta(days=days)).isoformat(),
        "value": value,
        "unit": unit,
        **({"upper_limit": uln} if uln is not None else {}),
        **kw,
    }


def _assess(visits: list[list[dict[str, Any]]], markers: list[dict[str, Any]], **kw: Any) -> Any:
    data = case(*visits, **kw)
    data["markers"] = markers
    return assess_timeline(timeline_from_dict(data))


GROWING = [[target("L1", 40)], [target("L1", 50)]]  # +25 % and +10 mm: RECIST PD at FU1 (day 49)
STABLE = [[target("L1", 40)], [target("L1", 38)]]  # SD


def _status(a: Any, t: int = 1) -> Any:
    return a.markers[0].at(t)


def test_falling_marker_with_recist_pd_raises_the_discordance_alert() -> None:
    """CEA 40 -> 18 ng/mL (-55 %) while the liver target grows 40 -> 50 mm (RECIST PD)."""
    a = _assess(GROWING, [cea(-10, 40), cea(45, 18)])
    status = _status(a)
    assert status.category is MarkerCategory.RESPONSE
    assert status.change_vs_pretreatment_pct == Decimal(-55)
    alert = next(x for x in a.alerts if x.code == "MARKER_FALLING_RECIST_PD")
    assert alert.timepoint == 1 and "CEA 18 ng/mL" in alert.message and "-55.0 %" in alert.message
    assert "Rustin" in alert.citation and alert.severity.value == "warning"


def test_fall_of_49_percent_is_not_a_marker_response() -> None:
    a = _assess(GROWING, [cea(-10, 40), cea(45, "20.4")])
    assert _status(a).category is MarkerCategory.STABLE
    assert "MARKER_FALLING_RECIST_PD" not in {x.code for x in a.alerts}


def test_pre_treatment_below_twice_the_uln_gives_no_response() -> None:
    """GCIG: a response needs a pre-treatment value >= 2 x ULN (here 9 < 10 ng/mL)."""
    a = _assess(GROWING, [cea(-10, 9), cea(45, 4)])
    assert _status(a).category is MarkerCategory.STABLE and "2 x ULN" in _status(a).rule


def test_rising_marker_with_recist_sd_raises_the_alert() -> None:
    """CEA nadir 8 -> 10 ng/mL (+25 %, above the ULN 5) while RECIST is SD."""
    a = _assess(STABLE, [cea(-10, 12), cea(20, 8), cea(45, 10)])
    status = _status(a)
    assert status.category is MarkerCategory.PROGRESSION
    assert (status.nadir, status.change_vs_nadir_pct) == (8, 25)
    alert = next(x for x in a.alerts if x.code == "MARKER_RISING_RECIST_NOT_PD")
    assert "SD" in alert.message and "ULN 5 ng/mL" in alert.message and "Scher" in alert.citation


def test_rise_below_25_percent_or_within_normal_range_is_not_progression() -> None:
    below = _assess(STABLE, [cea(-10, 12), cea(20, 8), cea(45, "9.9")])
    assert _status(below).category is MarkerCategory.STABLE
    normal = _assess(STABLE, [cea(-10, 3), cea(20, 2), cea(45, 4)])  # +100 % but under the ULN 5
    assert _status(normal).category is MarkerCategory.STABLE
    assert not {x.code for x in below.alerts + normal.alerts} & {"MARKER_RISING_RECIST_NOT_PD"}


def test_rise_without_reference_range_is_not_evaluable() -> None:
    a = _assess(STABLE, [cea(-10, 12, uln=None), cea(20, 8, uln=None), cea(45, 12, uln=None)])
    assert _status(a).category is MarkerCategory.NOT_EVALUABLE and "reference range" in _status(a).rule


def test_windows_and_units() -> None:
    # the only post-treatment result is 31 days before the FU1 scan (day 49): not evaluable
    far = _assess(GROWING, [cea(-10, 40), cea(18, 10)])
    assert _status(far).category is MarkerCategory.NOT_EVALUABLE
    # no pre-treatment result
    none = _assess(GROWING, [cea(45, 10)])
    assert _status(none).category is MarkerCategory.NOT_EVALUABLE and "pre-treatment" in _status(none).rule
    # µg/L is ng/mL; U/mL is not
    same = _assess(GROWING, [cea(-10, 40), cea(45, 18, unit="µg/L")])
    assert _status(same).category is MarkerCategory.RESPONSE
    changed = _assess(GROWING, [cea(-10, 40), cea(45, 18, unit="U/mL")])
    assert _status(changed).category is MarkerCategory.NOT_EVALUABLE
    assert unit_key("kU/L") == unit_key("U/ml")


def test_markers_parse_spellings_and_errors() -> None:
    data = case(*GROWING)
    data["markers"] = [cea(-10, 40, marker="ca19-9"), cea(45, 18, marker="CgA"), cea(0, 1, marker="CA125")]
    tl = timeline_from_dict(data)
    assert [m.marker for m in tl.markers] == [Marker.CA19_9, Marker.CA125, Marker.CHROMOGRANIN_A]
    data["markers"] = [cea(-10, 40, ref_high=5)]
    with pytest.raises(ValidationError, match=r"markers\[0\]\.ref_high: unknown key"):
        timeline_from_dict(data)
    data["markers"] = [cea(-10, 40, marker="PSA")]
    with pytest.raises(ValidationError, match=r"markers\[0\]\.marker: unknown tumour marker"):
        timeline_from_dict(data)
    data["markers"] = [cea(-10, -1)]
    with pytest.raises(ValidationError, match=r"markers\[0\]\.value: must be >= 0"):
        timeline_from_dict(data)


def test_markers_in_the_assessment_json() -> None:
    a = _assess(GROWING, [cea(-10, 40), cea(45, 18)])
    data = assessment_to_dict(a)
    series = data["markers"][0]
    assert series["marker"] == "CEA" and [r["value"] for r in series["results"]] == [40, 18]
    assert series["statuses"][0] is None and series["statuses"][1]["category"] == "response"
    assert marker_lines(data["markers"], 1)[0].startswith("CEA: response (CEA response: 18 ng/mL")
