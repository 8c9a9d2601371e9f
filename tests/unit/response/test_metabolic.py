"""Metabolic response on FDG PET (docs/criteria.md §13.3) and the PET discordance alert.

PERCIST 1.0 thresholds (Wahl RL et al. J Nucl Med 2009;50 Suppl 1:122S-150S, Table 6: PMR = SULpeak
>= 30 % and >= 0.8 SUL lower; PMD = >= 30 % and >= 0.8 SUL higher or new lesions) and EORTC 1999 (Young H et
al. Eur J Cancer 1999;35:1773-1782: PMR > 25 % fall after more than one cycle, PMD > 25 % rise). The figures
are chosen on either side of each threshold, not copied from a patient.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from recist_factories import START, case, target

from agent.response.metabolic import EORTC, PERCIST, MetabolicCategory
from agent.response.parse import assessment_to_dict, timeline_from_dict
from agent.response.table import assess_timeline

GROWING = [[target("L1", 40)], [target("L1", 50)]]  # RECIST PD at day 49


def pet(days: int, *lesions: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"date": (START + timedelta(days=days)).isoformat(), "lesions": list(lesions), **kw}


def les(lid: str, **kw: Any) -> dict[str, Any]:
    return {"id": lid, "organ": "liver", **kw}


def run(scans: list[dict[str, Any]], visits: list[list[dict[str, Any]]] = GROWING, **options: Any) -> Any:
    data = case(*visits, options=options or None)
    data["pet"] = scans
    return assess_timeline(timeline_from_dict(data))


def test_percist_pmr_with_recist_pd_raises_the_alert() -> None:
    a = run([pet(-10, les("L1", sul_peak=10, suv_max=14)), pet(45, les("L1", sul_peak="6.9", suv_max=9))])
    (result,) = a.metabolic
    assert result.method == PERCIST and result.category is MetabolicCategory.PMR
    assert result.change_pct == Decimal(-31) and result.fallback is None
    alert = next(x for x in a.alerts if x.code == "METABOLIC_RESPONSE_RECIST_PD")
    assert alert.timepoint == 1 and "Anatomic progression with metabolic response" in alert.message
    assert (
        "PMR by PERCIST 1.0" in alert.message and "4 days away" in alert.message and "Wahl" in alert.citation
    )


def test_percist_needs_both_the_relative_and_the_absolute_fall() -> None:
    # -30 % but only 0.6 SUL lower: SMD
    small = run([pet(-10, les("L1", sul_peak=2)), pet(45, les("L1", sul_peak="1.4"))])
    assert small.metabolic[0].category is MetabolicCategory.SMD
    # -29 %: SMD
    near = run([pet(-10, les("L1", sul_peak=10)), pet(45, les("L1", sul_peak="7.1"))])
    assert near.metabolic[0].category is MetabolicCategory.SMD
    assert "METABOLIC_RESPONSE_RECIST_PD" not in {x.code for x in small.alerts + near.alerts}
    # +30 % and +3 SUL: PMD
    up = run([pet(-10, les("L1", sul_peak=10)), pet(45, les("L1", sul_peak=13))])
    assert up.metabolic[0].category is MetabolicCategory.PMD


def test_percist_hottest_lesion_may_change_and_new_lesion_is_pmd() -> None:
    a = run(
        [
            pet(-10, les("L1", sul_peak=10), les("L2", sul_peak=4)),
            pet(45, les("L1", sul_peak=3), les("L2", sul_peak=5)),
        ]
    )
    assert a.metabolic[0].current_value == 5 and a.metabolic[0].category is MetabolicCategory.PMR
    new = run([pet(-10, les("L1", sul_peak=10)), pet(45, les("L1", sul_peak=3), new_lesions=["N1"])])
    assert new.metabolic[0].category is MetabolicCategory.PMD


def test_percist_cmr_when_every_lesion_is_gone_or_below_the_liver() -> None:
    gone = run([pet(-10, les("L1", sul_peak=10)), pet(45, les("L1", absent=True))])
    assert gone.metabolic[0].category is MetabolicCategory.CMR
    below = run([pet(-10, les("L1", sul_peak=10)), pet(45, les("L1", sul_peak="1.8"), liver_sul_mean=2)])
    assert below.metabolic[0].category is MetabolicCategory.CMR


def test_eortc_fallback_on_suvmax_is_stated() -> None:
    a = run(
        [
            pet(-10, les("L1", suv_max=10), les("L2", suv_max=6)),
            pet(45, les("L1", suv_max=7), les("L2", suv_max=4)),
        ]
    )
    (result,) = a.metabolic
    assert result.method == EORTC and result.category is MetabolicCategory.PMR  # 16 -> 11: -31.25 %
    assert result.fallback and "EORTC 1999 on SUVmax" in result.fallback
    alert = next(x for x in a.alerts if x.code == "METABOLIC_RESPONSE_RECIST_PD")
    assert "EORTC 1999 on SUVmax (body weight) is used instead of PERCIST 1.0" in alert.message
    # exactly -25 %: SMD (EORTC asks for more than 25 %)
    edge = run([pet(-10, les("L1", suv_max=8)), pet(45, les("L1", suv_max=6))])
    assert edge.metabolic[0].category is MetabolicCategory.SMD
    # > +25 %: PMD
    up = run([pet(-10, les("L1", suv_max=8)), pet(45, les("L1", suv_max="10.1"))])
    assert up.metabolic[0].category is MetabolicCategory.PMD
    # a baseline lesion without a value at the follow-up: NE
    missing = run([pet(-10, les("L1", suv_max=8)), pet(45, les("L2", suv_max=3))])
    assert missing.metabolic[0].category is MetabolicCategory.NE


def test_window_between_pet_and_ct() -> None:
    scans = [pet(-10, les("L1", sul_peak=10)), pet(49 - 43, les("L1", sul_peak=5))]  # 43 days before the CT
    assert "METABOLIC_RESPONSE_RECIST_PD" not in {x.code for x in run(scans).alerts}
    assert "METABOLIC_RESPONSE_RECIST_PD" in {x.code for x in run(scans, pet_window_days=60).alerts}
    # no alert when RECIST is not PD
    stable = run(
        [pet(-10, les("L1", sul_peak=10)), pet(45, les("L1", sul_peak=5))],
        [[target("L1", 40)], [target("L1", 41)]],
    )
    assert "METABOLIC_RESPONSE_RECIST_PD" not in {x.code for x in stable.alerts}


def test_metabolic_json() -> None:
    data = assessment_to_dict(run([pet(-10, les("L1", sul_peak=10)), pet(45, les("L1", sul_peak="6.9"))]))
    (entry,) = data["metabolic"]
    assert entry["method"] == "PERCIST 1.0" and entry["category"] == "PMR" and entry["change_pct"] == -31.0
    assert entry["baseline_value"] == 10 and entry["current_value"] == 6.9
