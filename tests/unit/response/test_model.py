"""The model is plain frozen dataclasses and enums: dataclass-generated ``__init__``, no mirror, no cache."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import date

import pytest

from agent.response import model
from agent.response.model import (
    Alert,
    Category,
    Context,
    CriterionResult,
    Lesion,
    Options,
    Threshold,
    TimePoint,
    TimepointAssessment,
)

RECORDS = [Options, Context, Lesion, TimePoint, TimepointAssessment, Threshold, CriterionResult, Alert]


@pytest.mark.parametrize("cls", RECORDS)
def test_records_are_frozen_dataclasses_with_the_generated_init(cls: type[object]) -> None:
    assert dataclasses.is_dataclass(cls)
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen
    parameters = inspect.signature(cls).parameters
    own = dataclasses.fields(cls)  # type: ignore[arg-type]
    assert list(parameters) == [f.name for f in own]
    for f in own:
        if f.default_factory is not dataclasses.MISSING:
            continue
        expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert parameters[f.name].default == expected


def test_instances_stay_frozen() -> None:
    assessment = TimepointAssessment(index=1, date=date(2024, 1, 1), category=Category.SD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        assessment.category = Category.PD  # type: ignore[misc]
    assert dataclasses.replace(assessment, category=Category.PD).category is Category.PD


def test_no_speed_devices_left_in_the_model() -> None:
    for name in ("C", "slot_init"):
        assert not hasattr(model, name)
