"""The radiologist's lesion pairing decisions (confirmed, re-paired, new, absent, not assessed), reused later.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.db.models import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lesion_pairings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("sr_sop_uid", sa.String(64), nullable=False),
        sa.Column("tracking_uid", sa.String(64), nullable=False),
        sa.Column("lesion_id", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("paired_with", sa.String(64), nullable=True),
        sa.Column("decided_by", sa.String(64), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["patients.id"], name="fk_lesion_pairings_patient_pk_patients"
        ),
        sa.UniqueConstraint(
            "study_uid", "sr_sop_uid", "tracking_uid", "lesion_id", name="uq_lesion_pairings_subject"
        ),
    )
    op.create_index("ix_lesion_pairings_patient_pk", "lesion_pairings", ["patient_pk"])


def downgrade() -> None:
    op.drop_index("ix_lesion_pairings_patient_pk", table_name="lesion_pairings")
    op.drop_table("lesion_pairings")
