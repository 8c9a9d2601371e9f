"""The outbox is claimed under a lease like jobs and alert deliveries (one queue mechanism, agent/queue):
several processes on several hosts may deliver, each row by one of them at a time.

Existing rows keep everything they hold; their lease starts empty (free to claim).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.db.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("lease_until")
