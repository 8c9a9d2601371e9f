"""The SR tests compare written bytes across runs: the writer's clock is fixed here (never in the product)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from agent.sr import write

FIXED_CLOCK = datetime(2030, 1, 2, 12, 34, 56)


@pytest.fixture(autouse=True, scope="session")
def fixed_clock() -> Iterator[datetime]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(write, "clock", lambda: FIXED_CLOCK)
        yield FIXED_CLOCK
