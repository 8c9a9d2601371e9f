"""Response split by site (docs/criteria.md §13): liver targets, extrahepatic targets and non-targets by
organ, each against its own baseline and nadir.

The overall categories stay those of the criteria; the split only shows where the disease changed, so that
the alert rules can say when the liver and the other sites disagree (``SITE_DISCORDANT_PROGRESSION``,
``SITE_LIVER_RESPONSE_EXTRAHEPATIC_PD``). Each site's target figures follow RECIST 1.1 §4.3.1 applied to
that site's baseline targets (sum, +20 % and +5 mm over the site's nadir, -30 % from the site's baseline);
a site's status combines them with its non-targets and new lesions by RECIST 1.1 Table 1. Pure: reads the
lesion registry (docs/criteria.md §1.3), no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from agent.response import recist
from agent.response.model import Category, Lesion, Timeline
from agent.response.registry import Registry, build_registry

LIVER = "liver"
EXTRAHEPATIC = "extrahepatic"
SITES = (LIVER, EXTRAHEPATIC)


def site_of(lesion: Lesion) -> str:
    """``liver`` for a liver lesion, ``extrahepatic`` for any other organ (nodes included)."""
    return LIVER if lesion.organ.strip().lower() == LIVER else EXTRAHEPATIC


@dataclass(frozen=True, slots=True)
class SiteTargets:
    """One site's baseline targets at one time point, against that site's own baseline and nadir."""

    site: str
    lesion_ids: tuple[str, ...]
    sum_mm: Decimal | None  # None when one of the site's targets was not assessed
    partial_sum_mm: Decimal
    baseline_sum_mm: Decimal
    nadir_sum_mm: Decimal | None = None  # the smallest earlier sum (baseline included); None at the baseline
    nadir_index: int | None = None
    change_vs_baseline_pct: Decimal | None = None
    change_vs_nadir_pct: Decimal | None = None
    category: Category = Category.NONE  # RECIST target response of this site alone (None at the baseline)
    rule: str = ""


@dataclass(frozen=True, slots=True)
class OrganNonTargets:
    """The baseline non-targets of one organ at one time point (RECIST 1.1 §4.3.2 on that organ alone)."""

    organ: str
    lesion_ids: tuple[str, ...]
    category: Category


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """One site's status at a follow-up: its targets, non-targets and new lesions by RECIST 1.1 Table 1."""

    site: str
    category: Category
    rule: str
    targets: SiteTargets | None
    non_target: Category
    new_lesions: tuple[str, ...]
    has_baseline_disease: bool


@dataclass(frozen=True, slots=True)
class SiteTimepoint:
    """The split of one time point (the baseline carries the sums only)."""

    index: int
    targets: tuple[SiteTargets, ...]  # one per site holding baseline targets, in ``SITES`` order
    non_targets: tuple[OrganNonTargets, ...]  # one per organ holding baseline non-targets
    sites: tuple[SiteStatus, ...] = ()  # follow-ups only: one per site with disease at baseline or now
    not_assessed: str | None = None  # why the time point is not split (evidence, §1.8)

    def site(self, name: str) -> SiteStatus | None:
        for status in self.sites:
            if status.site == name:
                return status
        return None

    def site_targets(self, name: str) -> SiteTargets | None:
        for entry in self.targets:
            if entry.site == name:
                return entry
        return None


def _indices(items: Sequence[Lesion], site: str) -> list[int]:
    return [i for i, lesion in enumerate(items) if site_of(lesion) == site]


def split(timeline: Timeline, registry: Registry | None = None) -> tuple[SiteTimepoint | None, ...]:
    """The per-site figures of every time point from the baseline on (``None`` before the baseline)."""
    reg = registry if registry is not None else build_registry(timeline)
    n = len(timeline.timepoints)
    b = reg.baseline_index
    out: list[SiteTimepoint | None] = [None] * n
    by_site = {site: _indices(reg.targets, site) for site in SITES}
    organs: dict[str, list[int]] = {}
    for i, lesion in enumerate(reg.non_targets):
        organs.setdefault(lesion.organ, []).append(i)
    baseline_sums: dict[str, Decimal | None] = {}
    for site, idx in by_site.items():
        values = [recist.target_value(reg.target_records[b][i]) for i in idx]
        baseline_sums[site] = recist.target_sum(values)[0] if idx else None
    history: dict[str, list[Decimal | None]] = {site: [] for site in SITES}
    for t in range(b, n):
        excluded = reg.exclusion(t)
        targets: list[SiteTargets] = []
        statuses: list[SiteStatus] = []
        for site in SITES:
            idx = by_site[site]
            base_sum = baseline_sums[site]
            entry: SiteTargets | None = None
            if idx and base_sum is not None:
                records = [reg.target_records[t][i] for i in idx]
                values = [recist.target_value(r) for r in records]
                current, partial = recist.target_sum(values)
                ids = tuple(reg.targets[i].id for i in idx)
                if t == b or excluded is not None:
                    entry = SiteTargets(site, ids, current if t == b else None, partial, base_sum)
                else:
                    earlier = history[site]
                    low = recist.nadir(base_sum, earlier)
                    low_index = b
                    for k, s in enumerate(earlier):
                        if s is not None and s == low and s < base_sum:
                            low_index = b + 1 + k
                            break
                    gone = recist.targets_disappeared([reg.targets[i] for i in idx], values)
                    category, rule = recist.target_response(current, partial, base_sum, low, gone, False)
                    entry = SiteTargets(
                        site,
                        ids,
                        current,
                        partial,
                        base_sum,
                        nadir_sum_mm=low,
                        nadir_index=low_index,
                        change_vs_baseline_pct=recist.percent_change(current, base_sum),
                        change_vs_nadir_pct=recist.percent_change(current, low),
                        category=category,
                        rule=rule,
                    )
                if t > b:
                    history[site].append(current if excluded is None else None)
                targets.append(entry)
            if t == b or excluded is not None:
                continue
            nt_idx = [i for i, lesion in enumerate(reg.non_targets) if site_of(lesion) == site]
            non_target = recist.non_target_response([reg.non_target_records[t][i] for i in nt_idx])
            new = tuple(lesion.id for lesion in reg.unequivocal_new(t) if site_of(lesion) == site)
            has_disease = bool(idx) or bool(nt_idx)
            if not has_disease and not new:
                continue
            target_category = entry.category if entry is not None else Category.NONE
            if idx and entry is None:
                target_category = Category.NE  # the site's baseline sum is unknown
            category, rule = recist.overall_response(target_category, non_target, bool(new), False)
            statuses.append(SiteStatus(site, category, rule, entry, non_target, new, has_disease))
        non_targets = tuple(
            OrganNonTargets(
                organ,
                tuple(reg.non_targets[i].id for i in idx),
                Category.NONE
                if t == b
                else Category.NE
                if excluded is not None
                else recist.non_target_response([reg.non_target_records[t][i] for i in idx]),
            )
            for organ, idx in organs.items()
        )
        out[t] = SiteTimepoint(
            index=t,
            targets=tuple(targets),
            non_targets=non_targets,
            sites=tuple(statuses),
            not_assessed=excluded if t > b else None,
        )
    return tuple(out)
