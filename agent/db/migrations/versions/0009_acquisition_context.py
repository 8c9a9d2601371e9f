"""The acquisition context learned from the PACS per series and instance (``acquisition_context``).

Modality, contrast phase inputs (series description, Contrast/Bolus Agent and Route, contrast delay), slice
thickness, kVp and pixel spacing of the images prior measurements were made on, as a C-FIND answered or the
retrieved instance said, so a prior is asked about once.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acquisition_context",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64)),
        sa.Column("study_date", sa.String(8)),
        sa.Column("modality", sa.String(16)),
        sa.Column("series_description", sa.String(64)),
        sa.Column("contrast_agent", sa.String(64)),
        sa.Column("contrast_route", sa.String(64)),
        sa.Column("slice_thickness", sa.String(16)),
        sa.Column("kvp", sa.String(16)),
        sa.Column("pixel_spacing", sa.String(34)),
        sa.Column("contrast_delay_s", sa.String(16)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("peer", sa.String(64)),
        sa.Column("learned_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_acquisition_context"),
        sa.UniqueConstraint("series_uid", "sop_uid", name="uq_acquisition_context_series_sop"),
    )
    op.create_index("ix_acquisition_context_sop_uid", "acquisition_context", ["sop_uid"])


def downgrade() -> None:
    op.drop_index("ix_acquisition_context_sop_uid", table_name="acquisition_context")
    op.drop_table("acquisition_context")
