"""Instances remember how they arrived: ``origin`` is ``routed`` or ``retrieved`` (our own C-MOVE/C-GET).

A retrieved instance is indexed but never reopens its study; a study first created by a retrieval is in the
state ``prior`` (a string column, no schema change for it). Rows that exist already were routed.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("origin", sa.String(16), nullable=False, server_default="routed"))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("origin")
