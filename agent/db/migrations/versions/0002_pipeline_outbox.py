"""Pipeline output versions, the delivery outbox, operational alerts, and a retry time for jobs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("not_before", UTCDateTime(), nullable=True))
    op.create_table(
        "output_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("sr_sop_uid", sa.String(64), nullable=False),
        sa.Column("summary_sop_uid", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_output_versions"),
        sa.ForeignKeyConstraint(["study_pk"], ["studies.id"], name="fk_output_versions_study_pk_studies"),
        sa.UniqueConstraint("study_pk", "version", name="uq_output_versions_study_pk_version"),
        sa.UniqueConstraint("study_pk", "digest", name="uq_output_versions_study_pk_digest"),
    )
    op.create_index("ix_output_versions_study_pk", "output_versions", ["study_pk"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=True),
        sa.Column("output_pk", sa.Integer(), nullable=True),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("alerted_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.ForeignKeyConstraint(["study_pk"], ["studies.id"], name="fk_outbox_study_pk_studies"),
        sa.ForeignKeyConstraint(
            ["output_pk"], ["output_versions.id"], name="fk_outbox_output_pk_output_versions"
        ),
        sa.UniqueConstraint("destination", "sop_uid", name="uq_outbox_destination_sop_uid"),
    )
    op.create_index("ix_outbox_state_next", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_study_pk", "outbox", ["study_pk"])
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


def downgrade() -> None:
    op.drop_table("operational_alerts")
    op.drop_table("outbox")
    op.drop_table("output_versions")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("not_before")
