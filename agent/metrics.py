"""Prometheus metrics of the process, in one place so that every layer can update them.

Counters and histograms live in the default ``prometheus_client`` registry; the web service adds a collector
that reads database state (studies by state, outbox depth, open alerts) at scrape time. Never imports
another ``agent`` package.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INSTANCES_RECEIVED = Counter(
    "liver_agent_instances_received", "DICOM instances stored by the C-STORE SCP", ["sop_class"]
)
BYTES_RECEIVED = Counter("liver_agent_received_bytes", "Bytes of DICOM instances stored by the C-STORE SCP")
INSTANCES_REFUSED = Counter(
    "liver_agent_instances_refused", "C-STORE requests answered with a failure status", ["status"]
)
ASSOCIATIONS_ACCEPTED = Counter("liver_agent_associations_accepted", "DICOM associations accepted")
ASSOCIATION_REJECTS = Counter("liver_agent_association_rejects", "DICOM associations rejected")
PIPELINE_DURATION = Histogram(
    "liver_agent_pipeline_duration_seconds",
    "Duration of pipeline stages (stage=total for a whole study)",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ALERTS_RAISED = Counter(
    "liver_agent_alerts_raised", "Alerts raised or raised again (new revision)", ["code", "severity"]
)
ALERT_DELIVERIES = Counter(
    "liver_agent_alert_deliveries", "Alert delivery attempts by sink and outcome", ["sink", "outcome"]
)
