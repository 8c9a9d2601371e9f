"""The model's ``C`` namespace mirrors ``Category`` exactly (the criteria compare with ``C.PD`` etc.)."""

from __future__ import annotations

from agent.response.model import C, Category


def test_c_holds_every_category_member_under_its_name() -> None:
    mirrored = {name: value for name, value in vars(C).items() if not name.startswith("_")}
    assert mirrored == dict(Category.__members__)
    for name, member in Category.__members__.items():
        assert getattr(C, name) is member
