"""Response split by site and the site-discordance alerts (docs/criteria.md §13.1).

The cases follow the dissociated-response pattern described by Tazdait M et al. (Eur J Cancer
2018;88:38-47: some lesions shrink while others grow under treatment) and reviewed by Humbert O, Chardin D
(Front Oncol 2020;10:566297); the figures are chosen to sit on the RECIST 1.1 thresholds (Eisenhauer EA et
al. Eur J Cancer 2009;45:228-247 §4.3.1), not copied from a patient.
"""

from __future__ import annotations

from decimal import Decimal

from recist_factories import new, non_target, target, timeline

from agent.response.model import Category
from agent.response.parse import assessment_to_dict, site_lines
from agent.response.sites import EXTRAHEPATIC, LIVER, split
from agent.response.table import assess_timeline


def _codes(tl_alerts: tuple[object, ...]) -> set[tuple[str, int | None]]:
    return {(a.code, a.timepoint) for a in tl_alerts}  # type: ignore[attr-defined]


def test_liver_grows_while_lung_shrinks_dissociated_response() -> None:
    """Liver 40 -> 30 (nadir) -> 48 mm: +60 % vs its nadir; lung 50 -> 35 -> 30 mm: -40 % vs its baseline.
    Overall 90 -> 65 -> 78 mm: +20 % and +13 mm over the nadir 65, so RECIST PD (driven by the liver)."""
    tl = timeline(
        [target("L1", 40), target("P1", 50, organ="lung")],
        [target("L1", 30), target("P1", 35, organ="lung")],
        [target("L1", 48), target("P1", 30, organ="lung")],
    )
    a = assess_timeline(tl)
    recist = a.results[0]
    assert recist.timepoints[2] is not None and recist.timepoints[2].category is Category.PD
    fu2 = a.sites[2]
    assert fu2 is not None
    liver, lung = fu2.site_targets(LIVER), fu2.site_targets(EXTRAHEPATIC)
    assert liver is not None and lung is not None
    assert (liver.sum_mm, liver.baseline_sum_mm, liver.nadir_sum_mm) == (48, 40, 30)
    assert liver.change_vs_nadir_pct == 60 and liver.change_vs_baseline_pct == 20
    assert liver.category is Category.PD and liver.nadir_index == 1
    assert (lung.sum_mm, lung.nadir_sum_mm, lung.category) == (30, 35, Category.PR)
    assert lung.change_vs_baseline_pct == -40
    assert ("SITE_DISCORDANT_PROGRESSION", 2) in _codes(a.alerts)
    alert = next(x for x in a.alerts if x.code == "SITE_DISCORDANT_PROGRESSION")
    assert "+60.0 %" in alert.message and "48 mm" in alert.message and "-40.0 %" in alert.message
    assert "pseudoprogression" in alert.message and "Tazdait" in alert.citation
    assert ("SITE_LIVER_RESPONSE_EXTRAHEPATIC_PD", 2) not in _codes(a.alerts)


def test_new_extrahepatic_lesion_is_not_site_discordant() -> None:
    """Liver progression with a new lung lesion: the extrahepatic disease progresses too, no alert."""
    tl = timeline(
        [target("L1", 40), target("P1", 50, organ="lung")],
        [target("L1", 60), target("P1", 40, organ="lung"), new("N1", 12, organ="lung")],
    )
    a = assess_timeline(tl)
    fu1 = a.sites[1]
    assert fu1 is not None
    other = fu1.site(EXTRAHEPATIC)
    assert other is not None and other.category is Category.PD and other.new_lesions == ("N1",)
    assert not {c for c, _ in _codes(a.alerts)} & {"SITE_DISCORDANT_PROGRESSION"}


def test_liver_response_overridden_by_extrahepatic_progression() -> None:
    """Liver 60 -> 30 mm (-50 %, PR) while an adrenal non-target progresses unequivocally: RECIST PD (Table 1)
    overrides the liver response."""
    tl = timeline(
        [target("L1", 60), target("P1", 20, organ="lung"), non_target("A1", organ="adrenal")],
        [
            target("L1", 30),
            target("P1", 22, organ="lung"),
            non_target("A1", "unequivocal_progression", organ="adrenal"),
        ],
    )
    a = assess_timeline(tl)
    assert a.results[0].timepoints[1] is not None and a.results[0].timepoints[1].category is Category.PD
    fu1 = a.sites[1]
    assert fu1 is not None
    liver = fu1.site(LIVER)
    assert liver is not None and liver.category is Category.PR
    organs = {nt.organ: nt.category for nt in fu1.non_targets}
    assert organs == {"adrenal": Category.PD}
    alert = next(x for x in a.alerts if x.code == "SITE_LIVER_RESPONSE_EXTRAHEPATIC_PD")
    assert alert.timepoint == 1 and "correctly overrides" in alert.message and "-50.0 %" in alert.message
    assert "SITE_DISCORDANT_PROGRESSION" not in {x.code for x in a.alerts}


def test_liver_only_disease_has_no_site_alert() -> None:
    """Without extrahepatic disease at baseline there is nothing to compare: no site alert."""
    a = assess_timeline(timeline([target("L1", 40)], [target("L1", 60)]))
    assert not {x.code for x in a.alerts} & {
        "SITE_DISCORDANT_PROGRESSION",
        "SITE_LIVER_RESPONSE_EXTRAHEPATIC_PD",
    }
    fu1 = a.sites[1]
    assert fu1 is not None and [s.site for s in fu1.sites] == [LIVER]


def test_liver_site_below_pd_threshold_is_not_discordant() -> None:
    """Liver +19 % over its nadir (40 -> 47.6 mm) is SD by its own rules: the overall PD is then not a
    liver-only progression, so no alert (a new liver lesion makes the overall PD here)."""
    tl = timeline(
        [target("L1", 40), target("P1", 50, organ="lung")],
        [target("L1", "47.6"), target("P1", 50, organ="lung"), new("N1", 5, organ="bone")],
    )
    a = assess_timeline(tl)
    fu1 = a.sites[1]
    assert fu1 is not None
    liver = fu1.site_targets(LIVER)
    assert liver is not None and liver.category is Category.SD and liver.change_vs_nadir_pct == 19
    assert "SITE_DISCORDANT_PROGRESSION" not in {x.code for x in a.alerts}


def test_site_nadir_is_the_sites_own() -> None:
    """Each site's nadir is its own smallest sum: the liver's nadir (FU1) differs from the lung's (FU2)."""
    tl = timeline(
        [target("L1", 40), target("P1", 50, organ="lung")],
        [target("L1", 30), target("P1", 45, organ="lung")],
        [target("L1", 35), target("P1", 40, organ="lung")],
        [target("L1", 36), target("P1", 44, organ="lung")],
    )
    fu3 = split(tl)[3]
    assert fu3 is not None
    liver, lung = fu3.site_targets(LIVER), fu3.site_targets(EXTRAHEPATIC)
    assert liver is not None and lung is not None
    assert (liver.nadir_sum_mm, liver.nadir_index) == (30, 1)
    assert (lung.nadir_sum_mm, lung.nadir_index) == (40, 2)
    assert lung.change_vs_nadir_pct == 10


def test_split_in_the_assessment_json_and_sentences() -> None:
    tl = timeline(
        [target("L1", 40), target("P1", 50, organ="lung"), non_target("B1", organ="bone")],
        [target("L1", 30), target("P1", 35, organ="lung"), non_target("B1", organ="bone")],
        [target("L1", 48), target("P1", 30, organ="lung"), non_target("B1", organ="bone")],
    )
    data = assessment_to_dict(assess_timeline(tl))
    sites = data["sites"]
    assert sites[0]["targets"]["liver"]["sum_mm"] == 40 and sites[0]["targets"]["liver"]["category"] is None
    fu2 = sites[2]
    assert fu2["targets"]["liver"] == {
        "lesions": ["L1"],
        "sum_mm": 48,
        "partial_sum_mm": 48,
        "baseline_sum_mm": 40,
        "nadir_sum_mm": 30,
        "nadir_label": "FU1",
        "change_vs_baseline_pct": 20.0,
        "change_vs_nadir_pct": 60.0,
        "category": "PD",
        "rule": fu2["targets"]["liver"]["rule"],
    }
    assert fu2["sites"]["extrahepatic"]["category"] == "PR"
    assert fu2["non_targets_by_organ"] == {"bone": {"lesions": ["B1"], "category": "NON_CR_NON_PD"}}
    lines = site_lines(fu2)
    assert lines[0] == "Liver targets 48 mm: +20.0 % vs baseline 40 mm, +60.0 % vs nadir 30 mm (FU1); PD."
    assert "Non-targets by organ: bone NON_CR_NON_PD." in lines


def test_not_assessed_site_target_gives_ne() -> None:
    tl = timeline(
        [target("L1", 40), target("P1", 50, organ="lung")],
        [target("L1", 41), target("P1", None, organ="lung", status="not_assessed")],
    )
    fu1 = split(tl)[1]
    assert fu1 is not None
    lung = fu1.site_targets(EXTRAHEPATIC)
    assert lung is not None and lung.sum_mm is None and lung.category is Category.NE
    assert lung.partial_sum_mm == Decimal(0)
