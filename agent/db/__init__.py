"""The index database: models, engine/session set-up and programmatic Alembic migrations.

It records what arrived and the durable job queue; it never reads DICOM files or talks to the network.
"""

from __future__ import annotations

from agent.db.migrate import upgrade
from agent.db.models import Base, Instance, Job, JobState, Patient, Series, Study, StudyState
from agent.db.session import make_engine, session_factory

__all__ = [
    "Base",
    "Instance",
    "Job",
    "JobState",
    "Patient",
    "Series",
    "Study",
    "StudyState",
    "make_engine",
    "session_factory",
    "upgrade",
]
