"""Tables of the alerts store (defined with the other models in ``agent.db.models``, re-exported here).

An alert's ``key`` identifies it across processing runs (study, code and time point for an assessment alert;
code and subject for an operational one), so re-running a study updates rows instead of adding them.
"""

from __future__ import annotations

from agent.db.models import (
    SEVERITY_RANK,
    AlertDelivery,
    AlertRecord,
    AlertSource,
    AlertState,
    DeliveryState,
    Severity,
)

__all__ = [
    "SEVERITY_RANK",
    "AlertDelivery",
    "AlertRecord",
    "AlertSource",
    "AlertState",
    "DeliveryState",
    "Severity",
]
