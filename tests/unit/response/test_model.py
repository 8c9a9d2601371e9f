"""Model helpers: ``C`` mirrors ``Category``; ``slot_init`` builds the same instances as ``dataclass``."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from datetime import date

import pytest

from agent.response.model import (
    Alert,
    C,
    Category,
    Context,
    CriterionResult,
    Lesion,
    Options,
    Threshold,
    TimePoint,
    TimepointAssessment,
    slot_init,
)


def test_c_holds_every_category_member_under_its_name() -> None:
    mirrored = {name: value for name, value in vars(C).items() if not name.startswith("_")}
    assert mirrored == dict(Category.__members__)
    for name, member in Category.__members__.items():
        assert getattr(C, name) is member


@dataclass(frozen=True, slots=True)
class _Generated:
    a: int
    b: str = "b"
    c: tuple[int, ...] = ()


@slot_init
@dataclass(frozen=True, slots=True)
class _Fast:
    a: int
    b: str = "b"
    c: tuple[int, ...] = ()


def test_slot_init_keeps_the_signature_defaults_and_values_of_the_generated_init() -> None:
    assert str(inspect.signature(_Fast)) == str(inspect.signature(_Generated))
    for args, kwargs in (((1,), {}), ((1, "x"), {"c": (2,)}), ((), {"a": 3, "b": "y"})):
        fast, generated = _Fast(*args, **kwargs), _Generated(*args, **kwargs)
        assert dataclasses.astuple(fast) == dataclasses.astuple(generated)
        assert repr(fast).removeprefix("_Fast") == repr(generated).removeprefix("_Generated")
    assert _Fast(1) == _Fast(1, "b", ()) and hash(_Fast(1)) == hash(_Fast(1, "b", ()))
    with pytest.raises(TypeError):
        _Fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Fast(1, d=2)  # type: ignore[call-arg]


def test_slot_init_instances_stay_frozen() -> None:
    fast = _Fast(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.a = 2  # type: ignore[misc]
    assessment = TimepointAssessment(index=1, date=date(2024, 1, 1), category=Category.SD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        assessment.category = Category.PD  # type: ignore[misc]
    assert dataclasses.replace(assessment, category=Category.PD).category is Category.PD


@pytest.mark.parametrize(
    "cls", [Options, Context, Lesion, TimePoint, TimepointAssessment, Threshold, CriterionResult, Alert]
)
def test_result_records_take_every_field_with_its_default(cls: type[object]) -> None:
    parameters = inspect.signature(cls).parameters
    own = dataclasses.fields(cls)  # type: ignore[arg-type]
    assert list(parameters) == [f.name for f in own]
    for f in own:
        expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert parameters[f.name].default == expected


def test_slot_init_refuses_what_it_cannot_reproduce() -> None:
    with pytest.raises(TypeError):

        @slot_init
        @dataclass(frozen=True, slots=True)
        class _Factory:
            items: list[int] = dataclasses.field(default_factory=list)
