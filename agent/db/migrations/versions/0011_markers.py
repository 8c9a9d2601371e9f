"""Tumour marker results per patient (HL7 ORU^R01 over MLLP, CSV import), read into the response timeline.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.db.models import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "markers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("marker", sa.String(32), nullable=False),
        sa.Column("sample_date", sa.String(10), nullable=False),
        sa.Column("value", sa.String(32), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("lower_limit", sa.String(32), nullable=True),
        sa.Column("upper_limit", sa.String(32), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_id", sa.String(128), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint(
            "patient_id", "issuer", "marker", "sample_date", name="uq_markers_patient_marker_day"
        ),
    )
    op.create_index("ix_markers_patient_id", "markers", ["patient_id"])


def downgrade() -> None:
    op.drop_index("ix_markers_patient_id", table_name="markers")
    op.drop_table("markers")
