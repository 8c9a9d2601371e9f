"""One durable queue for every kind of deferred work: study jobs, the DICOM outbox, alert deliveries.

A unit of work is a database row. :func:`claim` takes due rows under a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, a compare-and-set on the row's lease on SQLite, whose writers are serialised anyway), so that
any number of processes on any number of hosts sharing the database never hold the same row at once; a
holder that dies loses its rows when the lease runs out and another takes them over. :class:`LeaseKeeper`
renews a lease while the work runs, and says when it was lost. :class:`RetryPolicy` is the one back-off
rule (first wait, factor, ceiling). :func:`record_outcome` counts what became of each unit, with the same
outcome names for every queue (``liver_agent_queue_*`` metrics).

The tables keep their own states (jobs: pending, running, done, failed; outbox: pending, delivered,
quarantined; alert deliveries: pending, delivered, gave_up); "due" and "claimed" mean the same in each.
"""

from agent.queue.lease import Lease, LeaseKeeper, claim, holds, release, renew
from agent.queue.retry import RetryPolicy
from agent.queue.stats import record_claimed, record_outcome

__all__ = [
    "Lease",
    "LeaseKeeper",
    "RetryPolicy",
    "claim",
    "holds",
    "record_claimed",
    "record_outcome",
    "release",
    "renew",
]
