"""The response SR explains itself (docs/criteria.md §1.7) and never carries a response the evidence cannot
support (§1.8): an SR whose follow-up holds a 99,999,999 mm diameter gives NE, no target sum, and a critical
IMPLAUSIBLE_MEASUREMENT alert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from agent.response.model import Criterion
from agent.sr import codes
from tests.unit.sr.responsegen import CONTEXT, DATES, Inputs, assess, write_inputs
from tests.unit.sr.srgen import write_study_sr
from tests.unit.sr.test_longitudinal import P, follow_up_2


def _concept(item: Dataset) -> codes.Code | None:
    seq = getattr(item, "ConceptNameCodeSequence", None)
    if not seq:
        return None
    c = seq[0]
    return codes.Code(c.get("CodeValue") or c.get("LongCodeValue"), c.CodingSchemeDesignator, c.CodeMeaning)


def _code_value(item: Dataset) -> codes.Code:
    c = item.ConceptCodeSequence[0]
    return codes.Code(c.get("CodeValue") or c.get("LongCodeValue"), c.CodingSchemeDesignator, c.CodeMeaning)


def _qualitative(ds: Dataset) -> list[Dataset]:
    return [
        c
        for item in ds.ContentSequence
        if codes.matches(_concept(item), codes.QUALITATIVE_EVALUATIONS)
        for c in item.ContentSequence
    ]


def _by_method(items: list[Dataset], name: codes.Code, method: codes.Code) -> list[Dataset]:
    return [
        item
        for item in items
        if codes.matches(_concept(item), name)
        and any(codes.matches(_code_value(m), method) for m in getattr(item, "ContentSequence", []))
    ]


def _write(inputs: Inputs, d: Path) -> tuple[Dataset, dict[str, Any]]:
    d.mkdir(parents=True, exist_ok=True)
    rc, out, err = assess(
        *inputs.all, "--out", d / "resp.dcm", "--summary", d / "sum.dcm", "--json", *CONTEXT
    )
    assert rc == 0, err
    return pydicom.dcmread(d / "resp.dcm"), json.loads(out)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, dict[str, Any]]:
    return _write(write_inputs(tmp_path_factory.mktemp("in")), tmp_path_factory.mktemp("out"))


def test_each_criterion_carries_the_figures_behind_its_category(
    written: tuple[Dataset, dict[str, Any]],
) -> None:
    ds, _ = written
    items = _qualitative(ds)
    recist = [i.TextValue for i in _by_method(items, codes.RESPONSE_EXPLANATION, codes.RECIST_1_1)]
    assert any(t.startswith("Compared with baseline") and "at BL (2024-01-08)" in t for t in recist), (
        "\n".join(recist)
    )
    assert any(t.startswith("Sum ") and "vs baseline" in t and "vs nadir" in t for t in recist), recist
    choi = codes.CRITERION_CODES[Criterion.CHOI.value]
    choi_lines = [i.TextValue for i in _by_method(items, codes.RESPONSE_EXPLANATION, choi)]
    assert any(t.startswith("Per lesion:") and "HU" in t for t in choi_lines), choi_lines
    irecist = codes.CRITERION_CODES[Criterion.IRECIST.value]
    assert any(
        i.TextValue.startswith("State:") for i in _by_method(items, codes.RESPONSE_EXPLANATION, irecist)
    )


def test_a_99999999_mm_diameter_gives_no_response_and_no_target_sum(tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in")
    huge, _ = write_study_sr(
        tmp_path / "in",
        "fu2",
        patient_id=P,
        study="fu2",
        study_date=DATES["fu2"],
        lesions=follow_up_2(liver1=99999999),
    )
    ds, data = _write(Inputs(inputs.bl, inputs.fu1, huge), tmp_path / "out")
    assert data["recist"]["timepoint_responses"][-1] == "NE"
    assert data["recist"]["target_sums_mm"][-1] is None
    assert any(a["code"] == "IMPLAUSIBLE_MEASUREMENT" and a["severity"] == "critical" for a in data["alerts"])
    current = _by_method(_qualitative(ds), codes.CURRENT_RESPONSE, codes.RECIST_1_1)
    assert [codes.matches(_code_value(i), codes.CATEGORY_CODES["NE"]) for i in current] == [True]
    sums = [
        float(m.MeasuredValueSequence[0].NumericValue)
        for group in ds.ContentSequence
        for item in getattr(group, "ContentSequence", [])
        for m in getattr(item, "ContentSequence", [])
        if codes.matches(_concept(m), codes.MEASUREMENT_OF_RESPONSE)
    ]
    assert sums and max(sums) < 1000  # the earlier sums only, no 100 km sum


def test_lesion_cells_carry_the_density_and_the_chun_group_of_each_visit() -> None:
    """Choi 2007 and Chun 2009 are checked visit by visit from the lesion table, not from diameters only."""
    from decimal import Decimal

    from agent.response.model import Lesion, LesionKind, LesionStatus
    from agent.sr.report import cell

    record = Lesion(
        "T1",
        "liver",
        LesionKind.TARGET,
        LesionStatus.MEASURED,
        long_axis_mm=Decimal(36),
        mean_hu=Decimal("61.6"),
    )
    assert cell(record)[:2] == ("36 mm", "62 HU")
    grouped = Lesion(
        "T1", "liver", LesionKind.TARGET, LesionStatus.MEASURED, long_axis_mm=Decimal(36), chun_group=2
    )
    assert cell(grouped)[:2] == ("36 mm", "G2")
