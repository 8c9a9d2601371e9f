"""Operational alerts live in the alerts store only: drop ``operational_alerts``; add ``peer_health``.

The pipeline's own table of operational alerts was never sent to the sinks nor shown by the HTTP API; the
pipeline and the outbox now raise through ``agent.alerts.store``. ``peer_health`` remembers since when a
peer has not answered (the clock of ``PACS_UNREACHABLE``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.db.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("operational_alerts")
    op.create_table(
        "peer_health",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("unreachable_since", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_peer_health"),
    )


def downgrade() -> None:
    op.drop_table("peer_health")
    op.create_table(
        "operational_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(48), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=True),
        sa.Column("outbox_pk", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_operational_alerts"),
        sa.ForeignKeyConstraint(["study_pk"], ["studies.id"], name="fk_operational_alerts_study_pk_studies"),
        sa.ForeignKeyConstraint(["outbox_pk"], ["outbox.id"], name="fk_operational_alerts_outbox_pk_outbox"),
    )
