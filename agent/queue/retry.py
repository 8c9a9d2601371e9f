"""The back-off rule of every queue: wait ``initial_s * factor ** (n - 1)`` after the n-th failure, at most
``max_s`` (never below the first wait)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float
    factor: float = 2.0
    max_s: float | None = None

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based; 0 counts as 1)."""
        exponent = max(failures - 1, 0)
        cap = self.initial_s if self.max_s is None else max(self.max_s, self.initial_s)
        if self.factor <= 1:
            return float(min(self.initial_s, cap))
        if exponent > 64:  # far past any ceiling: avoid an overflow
            return float(cap)
        return float(min(self.initial_s * self.factor**exponent, cap))

    def next_at(self, failures: int, now: datetime) -> datetime:
        return now + timedelta(seconds=self.delay(failures))
