"""Jobs count their retries while a peer was unreachable apart from their attempts.

An outage of the PACS never uses up a job's attempts (``pipeline.max_attempts``); ``outage_retries`` is the
number of consecutive retries for an unreachable peer, which sets the job's capped back-off.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("outage_retries", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("outage_retries")
