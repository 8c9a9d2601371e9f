"""Property tests of RECIST 1.1 (hypothesis): invariances the rules must keep for any series."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from recist_factories import new, target, timeline

from agent.response import recist
from agent.response.model import Category

# Plausible diameters whose visit-to-visit ratios stay below a tenfold change (which reads as a cm/mm slip,
# docs/criteria.md §1.8); scaled series may exceed 400 mm, so the plausible range is widened for them.
diameters = st.decimals(min_value=Decimal("10"), max_value=Decimal("75"), places=1)
WIDE = {"plausible_max_mm": 10000}
series = st.lists(st.lists(diameters, min_size=3, max_size=3), min_size=2, max_size=6)
factors = st.sampled_from([Decimal("0.5"), Decimal("1.5"), Decimal("2"), Decimal("3.7"), Decimal("10")])

# Order from best to worst, to check that growth never improves the category.
RANK = {Category.CR: 0, Category.PR: 1, Category.SD: 2, Category.PD: 3}


def _series(rows: list[list[Decimal]], scale: Decimal = Decimal(1)) -> object:
    organs = ("liver", "lung", "bone")
    return timeline(
        *[[target(f"T{i}", str(v * scale), organ=organs[i]) for i, v in enumerate(row)] for row in rows],
        options=WIDE,
    )


@settings(max_examples=150, deadline=None)
@given(series, factors)
def test_scaling_every_diameter_never_changes_a_category(rows: list[list[Decimal]], factor: Decimal) -> None:
    # Every ratio rule is scale-free, but RECIST PD also needs an absolute +5 mm, which scaling can cross
    # (20 -> 24 mm is SD, 40 -> 48 mm is PD). The property holds wherever both series fall on the same side
    # of the 5 mm rule; the others are skipped.
    base = recist.assess(_series(rows))  # type: ignore[arg-type]
    scaled = recist.assess(_series(rows, factor))  # type: ignore[arg-type]
    sums = [sum(r) for r in rows]
    for t in range(1, len(rows)):
        nadir = min(sums[:t])
        five_mm_same = (sums[t] - nadir >= 5) == ((sums[t] - nadir) * factor >= 5)
        if five_mm_same:
            a, b = base.timepoints[t], scaled.timepoints[t]
            assert a is not None and b is not None
            assert a.category is b.category, (rows, factor, t)


@settings(max_examples=150, deadline=None)
@given(series, st.decimals(min_value=Decimal("0.1"), max_value=Decimal("400"), places=1))
def test_growing_the_current_sum_never_improves_the_category(
    rows: list[list[Decimal]], growth: Decimal
) -> None:
    grown = [list(r) for r in rows]
    grown[-1][0] += growth
    before = recist.assess(_series(rows)).timepoints[-1]  # type: ignore[arg-type]
    after = recist.assess(_series(grown)).timepoints[-1]  # type: ignore[arg-type]
    assert before is not None and after is not None
    assert RANK[after.category] >= RANK[before.category]


@settings(max_examples=100, deadline=None)
@given(series)
def test_an_unequivocal_new_lesion_always_gives_pd(rows: list[list[Decimal]]) -> None:
    organs = ("liver", "lung", "bone")
    visits = [[target(f"T{i}", str(v), organ=organs[i]) for i, v in enumerate(row)] for row in rows]
    visits[-1].append(new("NEW1", 12))
    result = recist.assess(timeline(*visits))
    last = result.timepoints[-1]
    assert last is not None and last.category is Category.PD and last.new_lesion


@settings(max_examples=150, deadline=None)
@given(series)
def test_the_nadir_never_exceeds_the_baseline(rows: list[list[Decimal]]) -> None:
    result = recist.assess(_series(rows))  # type: ignore[arg-type]
    assert result.baseline_sum_mm is not None
    for tp in result.timepoints[1:]:
        assert tp is not None and tp.nadir_sum_mm is not None
        assert tp.nadir_sum_mm <= result.baseline_sum_mm
