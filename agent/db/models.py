"""SQLAlchemy 2.0 models of the index: patients, studies, series, instances, and the durable job queue.

The index only records what arrived and where it lies in the spool; the DICOM files are the truth. Times are
stored as naive UTC and handed back as aware UTC datetimes, so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Alert severities and their order are the clinical core's: one definition for the whole agent.
from agent.response.model import SEVERITY_RANK as SEVERITY_RANK
from agent.response.model import Severity as Severity

UID_LEN = 64

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class StudyState(enum.StrEnum):
    """Where a study is in ``receiving -> stable -> processing -> done | failed | ignored``.

    ``prior`` is outside that cycle: a study first seen through a retrieval we asked for (C-MOVE to our own
    AE, or C-GET) is held only as evidence for other studies. Stability never picks it up and no job is
    made for it; the first instance routed to us for it (any other C-STORE) moves it to ``receiving`` like
    a new study.
    """

    PRIOR = "prior"
    RECEIVING = "receiving"
    STABLE = "stable"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    IGNORED = "ignored"


class InstanceOrigin(enum.StrEnum):
    """How an instance reached the listener."""

    ROUTED = "routed"  # sent to us by a PACS or modality: new data, (re)opens its study
    RETRIEVED = "retrieved"  # answered our own C-MOVE or C-GET: indexed, never (re)opens its study


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


# Jobs that still have work to do; at most one per (kind, study) at any time.
ACTIVE_JOB_STATES = (JobState.PENDING.value, JobState.RUNNING.value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer", name="uq_patients_patient_id_issuer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    # Issuer of Patient ID; empty when the sender gave none.
    issuer: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str | None] = mapped_column(String(324))
    birth_date: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(UID_LEN), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_time: Mapped[str | None] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RECEIVING.value, index=True)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Start of the current receiving episode (reset when an instance reopens a stable or processed study);
    # ``max_wait_s`` counts from here.
    receiving_since: Mapped[datetime] = mapped_column(UTCDateTime())
    stable_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The node whose spool holds the study's files (agent.pipeline.nodes); None until one adopts it.
    node: Mapped[str | None] = mapped_column(String(64))

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")
    jobs: Mapped[list[Job]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(UID_LEN), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[str | None] = mapped_column(String(12))
    description: Mapped[str | None] = mapped_column(String(64))
    body_part: Mapped[str | None] = mapped_column(String(16))

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(UID_LEN), unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LEN))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID_LEN))
    instance_number: Mapped[str | None] = mapped_column(String(12))
    # Path of the file relative to the spool directory.
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    calling_aet: Mapped[str | None] = mapped_column(String(16))
    # ``InstanceOrigin`` of the latest copy received.
    origin: Mapped[str] = mapped_column(
        String(16), default=InstanceOrigin.ROUTED.value, server_default=InstanceOrigin.ROUTED.value
    )
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())

    series: Mapped[Series] = relationship(back_populates="instances")


class AcquisitionContext(Base):
    """The acquisition context learned from the PACS about an image we do not hold (or its series).

    One row per (series, instance); ``sop_uid`` is empty for what the series-level answer said. Written when
    a C-FIND answered or a referenced instance was retrieved, so a prior image is asked about once. Values are
    the DICOM strings as answered; None when the PACS did not say.
    """

    __tablename__ = "acquisition_context"
    __table_args__ = (UniqueConstraint("series_uid", "sop_uid", name="uq_acquisition_context_series_sop"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(UID_LEN))
    sop_uid: Mapped[str] = mapped_column(String(UID_LEN), default="", index=True)
    study_uid: Mapped[str | None] = mapped_column(String(UID_LEN))
    study_date: Mapped[str | None] = mapped_column(String(8))
    modality: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(64))
    contrast_agent: Mapped[str | None] = mapped_column(String(64))
    contrast_route: Mapped[str | None] = mapped_column(String(64))
    slice_thickness: Mapped[str | None] = mapped_column(String(16))
    kvp: Mapped[str | None] = mapped_column(String(16))
    pixel_spacing: Mapped[str | None] = mapped_column(String(34))
    contrast_delay_s: Mapped[str | None] = mapped_column(String(16))
    # How it was learned: "query" (C-FIND) or "retrieved" (the instance's own header); and from which peer.
    source: Mapped[str] = mapped_column(String(16))
    peer: Mapped[str | None] = mapped_column(String(64))
    learned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LesionPairing(Base):
    """The radiologist's decision about lesion identity (docs/criteria.md §1.3), kept for the patient:
    a follow-up measurement group (its SR and Tracking UID) is the same lesion as an earlier one (``same``,
    ``paired_with`` its id) or a new lesion (``new``); or an earlier lesion (``lesion_id``) the study does
    not measure is ``absent`` or ``not_assessed`` there (``sr_sop_uid`` and ``tracking_uid`` empty). Every
    later assessment of the patient uses it; a later decision for the same group or lesion replaces it."""

    __tablename__ = "lesion_pairings"
    __table_args__ = (
        UniqueConstraint(
            "study_uid", "sr_sop_uid", "tracking_uid", "lesion_id", name="uq_lesion_pairings_subject"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(UID_LEN))
    sr_sop_uid: Mapped[str] = mapped_column(String(UID_LEN))
    tracking_uid: Mapped[str] = mapped_column(String(UID_LEN), default="")
    lesion_id: Mapped[str] = mapped_column(String(64), default="")
    decision: Mapped[str] = mapped_column(String(16))  # same | new | absent | not_assessed
    paired_with: Mapped[str | None] = mapped_column(String(64))
    decided_by: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MarkerRecord(Base):
    """One tumour marker result of a patient (docs/criteria.md §13.2), from HL7 ORU^R01 or a CSV import.

    Keyed by the patient's ID and issuer as the laboratory gave them (a result may arrive before any study
    of the patient); one row per (patient, marker, sample date): a later result of the same day replaces
    it, as a corrected HL7 result does. ``value`` and the limits keep the decimal text exactly.
    """

    __tablename__ = "markers"
    __table_args__ = (
        UniqueConstraint(
            "patient_id", "issuer", "marker", "sample_date", name="uq_markers_patient_marker_day"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    issuer: Mapped[str] = mapped_column(String(64), default="")
    marker: Mapped[str] = mapped_column(String(32))  # agent.response.model.Marker value
    sample_date: Mapped[str] = mapped_column(String(10))  # ISO date
    value: Mapped[str] = mapped_column(String(32))
    unit: Mapped[str] = mapped_column(String(32))
    lower_limit: Mapped[str | None] = mapped_column(String(32))
    upper_limit: Mapped[str | None] = mapped_column(String(32))
    # "hl7" or "csv", and what identifies the result there (message control ID and OBX set ID, file row)
    source: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str | None] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    """A durable queue row: the pipeline claims it with a lease, so a crash never loses the work."""

    __tablename__ = "jobs"
    __table_args__ = (
        # At most one pending or running job of a kind per study: enqueueing is idempotent.
        Index(
            "uq_jobs_active_kind_study",
            "kind",
            "study_pk",
            unique=True,
            sqlite_where=text("state IN ('pending', 'running')"),
            postgresql_where=text("state IN ('pending', 'running')"),
        ),
        Index("ix_jobs_state_lease", "state", "lease_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    study_pk: Mapped[int | None] = mapped_column(ForeignKey("studies.id"))
    state: Mapped[str] = mapped_column(String(16), default=JobState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    # A failed attempt is retried no earlier than this (None: at once).
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Consecutive retries because a peer was unreachable: they set the back-off, not counted in ``attempts``.
    outage_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    study: Mapped[Study | None] = relationship(back_populates="jobs")


class ResultKind(enum.StrEnum):
    PRE_READ = "pre_read"  # the current study has images only: prior table and thresholds for the read
    FINAL = "final"  # the current study has measurements: its response


class OutputVersion(Base):
    """One version of our output for a study: the SR and summary we wrote, and what they were made from.

    ``digest`` identifies the inputs; the same inputs map to the same version, hence the same SOP Instance
    UIDs, so re-running a study never produces a second object in the PACS. Exactly one row per study is
    ``current``; a newer version lists the earlier SR as its predecessor.
    """

    __tablename__ = "output_versions"
    __table_args__ = (
        UniqueConstraint("study_pk", "version", name="uq_output_versions_study_pk_version"),
        UniqueConstraint("study_pk", "digest", name="uq_output_versions_study_pk_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64))
    current: Mapped[bool] = mapped_column(default=True)
    series_uid: Mapped[str] = mapped_column(String(UID_LEN))
    sr_sop_uid: Mapped[str] = mapped_column(String(UID_LEN))
    summary_sop_uid: Mapped[str | None] = mapped_column(String(UID_LEN))
    # JSON: the assessment and the inputs used (SR instance UIDs, criteria, context).
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    QUARANTINED = "quarantined"  # permanent failure status: waits for an operator (``outbox retry``)


class OutboxItem(Base):
    """One object to deliver to one destination; a row is never deleted."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("destination", "sop_uid", name="uq_outbox_destination_sop_uid"),
        Index("ix_outbox_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))
    study_pk: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), index=True)
    output_pk: Mapped[int | None] = mapped_column(ForeignKey("output_versions.id"))
    sop_uid: Mapped[str] = mapped_column(String(UID_LEN))
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LEN))
    path: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # When the give-up alert was raised (delivery still pending after outbox.give_up_after_s).
    alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Held by a delivering process until then (agent/queue); None: free.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The object's bytes, so that any node can deliver it when the file is not on its disk.
    data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class Node(Base):
    """One ``serve`` process sharing the database: its heartbeat says it is alive (agent.pipeline.nodes)."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PeerHealth(Base):
    """Whether a configured DICOM peer answers: since when it has not (the ``PACS_UNREACHABLE`` clock).

    Kept in the database rather than in memory, so a restart during an outage does not restart the clock.
    Operational alerts themselves live in the alerts store (``alerts``), like every other alert.
    """

    __tablename__ = "peer_health"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # First failure of the current outage (no association, timeout, abort); null while the peer answers.
    unreachable_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# Alerts store (agent/alerts): one row per alert, one row per (alert, sink, revision) delivery. An alert's
# ``key`` identifies it across processing runs, so re-running a study updates rows instead of adding them.


class AlertSource(enum.StrEnum):
    ASSESSMENT = "assessment"
    OPERATIONAL = "operational"


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    # No longer produced by the latest run of its study (or the operational condition cleared).
    RESOLVED = "resolved"


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


class WebUser(Base):
    """A worklist user managed with ``liver-agent web add-user`` (users of ``web.users`` live in the
    configuration instead; a name is in one place or the other)."""

    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebSession(Base):
    """A login session of the worklist pages: it exists from login until logout, expiry, or a change of the
    user's password. The cookie carries the session's random id; only its SHA-256 is stored."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    # SHA-256 of the user's password hash at login: a different one now means the password changed.
    password_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
