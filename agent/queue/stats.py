"""The metrics every queue reports: rows claimed, and what became of each attempt."""

from __future__ import annotations

from prometheus_client import Counter

QUEUE_CLAIMED = Counter("liver_agent_queue_claimed", "Rows claimed under a lease, by queue", ["queue"])
QUEUE_OUTCOMES = Counter(
    "liver_agent_queue_outcomes",
    "Attempts by queue and outcome: done, retry (back-off), failed (for good or until an operator acts), "
    "lost (the lease ran out and another holder took the row)",
    ["queue", "outcome"],
)
OUTCOMES = ("done", "retry", "failed", "lost")


def record_claimed(queue: str, n: int = 1) -> None:
    if n:
        QUEUE_CLAIMED.labels(queue=queue).inc(n)


def record_outcome(queue: str, outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown queue outcome {outcome!r}")
    QUEUE_OUTCOMES.labels(queue=queue, outcome=outcome).inc()
