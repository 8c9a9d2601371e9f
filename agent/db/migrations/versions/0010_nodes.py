"""Several agent nodes on one database: each node's heartbeat, the node holding a study's files, and the
bytes of each outbound object (so that any node can deliver it).

Existing rows survive: studies start with no holder (the node whose spool holds the files adopts them),
outbox rows without bytes are delivered from their file as before.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.db.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("node", sa.String(64), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("data", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("data")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("node")
    op.drop_table("nodes")
