"""Tables of the alerts store: one row per alert, one row per (alert, sink, revision) delivery.

An alert's ``key`` identifies it across processing runs (study, code and time point for an assessment alert;
code and subject for an operational one), so re-running a study updates rows instead of adding them.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from agent.db.models import Base, Patient, Study, UTCDateTime, utcnow


class AlertSource(enum.StrEnum):
    ASSESSMENT = "assessment"
    OPERATIONAL = "operational"


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    # No longer produced by the latest run of its study (or the operational condition cleared).
    RESOLVED = "resolved"


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


SEVERITY_RANK = {Severity.CRITICAL.value: 0, Severity.WARNING.value: 1, Severity.INFO.value: 2}


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"


class AlertRecord(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("key", name="uq_alerts_key"),
        Index("ix_alerts_state_severity", "state", "severity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))
    study_pk: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), index=True)
    patient_pk: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    code: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    # Index of the time point in the study's timeline (assessment alerts).
    timepoint: Mapped[int | None] = mapped_column(Integer)
    # What an operational alert is about: a peer, a sink, the spool.
    subject: Mapped[str | None] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    citation: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default=AlertState.OPEN.value)
    # Bumped whenever severity or message change or a resolved alert comes back; each revision is delivered.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    result_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    study: Mapped[Study | None] = relationship()
    patient: Mapped[Patient | None] = relationship()


class AlertDelivery(Base):
    """A durable delivery of one alert revision to one sink, retried with exponential back-off."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("alert_pk", "sink", "revision", name="uq_alert_deliveries_alert_pk"),
        Index("ix_alert_deliveries_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_pk: Mapped[int] = mapped_column(ForeignKey("alerts.id"), index=True)
    sink: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    alert: Mapped[AlertRecord] = relationship()
