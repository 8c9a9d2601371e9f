"""``/metrics``: the process counters of ``agent.metrics`` plus gauges read from the database at scrape time
(studies by state, outbox depth and oldest age per queue, alerts by code, severity and state)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from agent.alerts.models import AlertDelivery, DeliveryState
from agent.alerts.store import counts_by_code
from agent.db.models import OutboxItem, OutboxState, Study, StudyState, utcnow
from agent.log import get_logger

log = get_logger(__name__)


class DatabaseCollector:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("liver_agent_database_up", "1 if the database answered this scrape")
        try:
            families = self._families()
        except Exception as exc:
            log.warning("metrics.database_failed", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> list[Metric]:
        now = utcnow()
        with self.sessions() as session:
            studies = dict(session.execute(select(Study.state, func.count()).group_by(Study.state)).all())
            queues = {
                "dicom": session.execute(
                    select(func.count(), func.min(OutboxItem.created_at)).where(
                        OutboxItem.state == OutboxState.PENDING.value
                    )
                ).one(),
                "alerts": session.execute(
                    select(func.count(), func.min(AlertDelivery.created_at)).where(
                        AlertDelivery.state == DeliveryState.PENDING.value
                    )
                ).one(),
            }
            alerts = counts_by_code(session)
        by_state = GaugeMetricFamily("liver_agent_studies", "Studies by processing state", labels=["state"])
        for study_state in StudyState:
            by_state.add_metric([study_state.value], int(studies.get(study_state.value, 0)))
        depth = GaugeMetricFamily(
            "liver_agent_outbox_pending", "Deliveries waiting in the outbox", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "liver_agent_outbox_oldest_age_seconds",
            "Age of the oldest pending delivery (0 when none)",
            labels=["queue"],
        )
        for queue, (n, oldest) in queues.items():
            depth.add_metric([queue], int(n))
            age.add_metric([queue], max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        alert_gauge = GaugeMetricFamily(
            "liver_agent_alerts", "Alerts in the store", labels=["code", "severity", "state"]
        )
        for code, severity, state, n in alerts:
            alert_gauge.add_metric([code, severity, state], n)
        return [by_state, depth, age, alert_gauge]


def render_metrics(sessions: sessionmaker[Session]) -> tuple[bytes, str]:
    """The process registry followed by the database gauges, in the Prometheus text format."""
    db_registry = CollectorRegistry(auto_describe=False)
    db_registry.register(DatabaseCollector(sessions))
    return generate_latest(REGISTRY) + generate_latest(db_registry), CONTENT_TYPE_LATEST
