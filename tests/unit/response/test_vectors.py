"""Every worked case of ``tests/data/criteria/vectors.json`` (the project's worked-case set).

A missing or unreadable file fails the collection; ``test_every_case_is_collected`` makes sure the cases
cannot silently vanish."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent.response.model import Assessment
from agent.response.parse import apply_options, assessment_to_dict, criterion_from_name, timeline_from_dict
from agent.response.table import assess_timeline

REPO = Path(__file__).resolve().parents[3]
VECTORS = REPO / "tests" / "data" / "criteria" / "vectors.json"
#: The number of cases the file held when it moved into the repository: it may grow, never shrink.
MIN_CASES = 63
NON_CRITERION_KEYS = {"alerts_include", "alerts_exclude", "variants"}


def _cases() -> list[dict[str, Any]]:
    return list(json.loads(VECTORS.read_text(encoding="utf-8"))["cases"])


CASES = _cases()

KEY_TO_NAME = {
    "recist": "RECIST1.1",
    "irecist": "iRECIST",
    "choi": "Choi",
    "mchoi": "mChoi",
    "mrecist": "mRECIST",
    "easl": "EASL",
    "chun": "Chun",
}


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(_same, expected, actual))
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return isinstance(actual, int | float) and Decimal(str(expected)) == Decimal(str(actual))
    return bool(expected == actual)


def _check_criteria(expected: dict[str, Any], output: dict[str, Any], where: str) -> None:
    for key, block in expected.items():
        if key in NON_CRITERION_KEYS:
            continue
        assert key in output, f"{where}: criterion {key} not computed"
        for field, want in block.items():
            got = output[key][field]
            assert _same(want, got), f"{where}: {key}.{field}: expected {want}, got {got}"


def _assess(case: dict[str, Any], keys: set[str], options: dict[str, Any] | None = None) -> Assessment:
    timeline = timeline_from_dict(case)
    if options:
        timeline = apply_options(timeline, options)
    criteria = {criterion_from_name(KEY_TO_NAME[k]) for k in keys} | set(timeline.context.criteria)
    return assess_timeline(timeline, criteria)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_vector_responses(case: dict[str, Any]) -> None:
    expected = case["expected"]
    keys = set(expected) - NON_CRITERION_KEYS
    output = assessment_to_dict(_assess(case, keys))
    _check_criteria(expected, output, case["id"])


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_vector_alerts(case: dict[str, Any]) -> None:
    expected = case["expected"]
    output = assessment_to_dict(_assess(case, set(expected) - NON_CRITERION_KEYS))
    emitted = {(a["code"], a["timepoint"]) for a in output["alerts"]}
    codes = {a["code"] for a in output["alerts"]}
    for code, timepoint in expected.get("alerts_include", []):
        assert (code, timepoint) in emitted, (
            f"{case['id']}: alert {code} at {timepoint} missing; got {emitted}"
        )
    for code in expected.get("alerts_exclude", []):
        assert code not in codes, f"{case['id']}: alert {code} must not be emitted"


VARIANTS = [
    (case, name, block) for case in CASES for name, block in case["expected"].get("variants", {}).items()
]


@pytest.mark.parametrize(
    ("case", "variant", "expected"), VARIANTS, ids=[f"{c['id']}[{v}]" for c, v, _ in VARIANTS]
)
def test_vector_variants(case: dict[str, Any], variant: str, expected: dict[str, Any]) -> None:
    option, _, raw = variant.partition("=")
    value: Any = raw
    if raw in ("true", "false"):
        value = raw == "true"
    elif raw.isdigit():
        value = int(raw)
    merged = {**case.get("options", {}), option: value}
    output = assessment_to_dict(_assess(case, set(expected), merged))
    _check_criteria(expected, output, f"{case['id']} with {variant}")


def test_every_case_has_a_unique_id() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)) and ids


def _parametrised(test: Any) -> int:
    """How many cases pytest generates for a parametrised test function."""
    marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
    assert len(marks) == 1
    return len(marks[0].args[1])


def test_every_case_is_collected() -> None:
    cases_in_file = len(json.loads(VECTORS.read_text(encoding="utf-8"))["cases"])
    assert cases_in_file >= MIN_CASES
    assert _parametrised(test_vector_responses) == cases_in_file
    assert _parametrised(test_vector_alerts) == cases_in_file
    variants_in_file = sum(len(c["expected"].get("variants", {})) for c in CASES)
    assert variants_in_file > 0 and _parametrised(test_vector_variants) == variants_in_file
