"""inbound_updates: the /start generation, and an index on received_at.

Telegram restarts update_id at random after a week without updates, so update_id is neither
an order nor unique for ever:

- inbound_updates.generation: the funnel generation a /start begins (its receipt time in ms),
  kept so a retried job uses the same one; rows of older versions keep NULL (they used the
  update_id, and so does their retry).
- ix_inbound_updates_received_at: rows older than the dedup window are taken over by a new
  update with the same id and deleted by the `purge_inbound_updates` reconciler, which needs
  this index. On PostgreSQL it is built CONCURRENTLY, so workers keep writing meanwhile.

Expand-only: a nullable column and an index, nothing removed or rewritten.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEX = "ix_inbound_updates_received_at"


def upgrade() -> None:
    with op.batch_alter_table("inbound_updates") as batch:
        batch.add_column(sa.Column("generation", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(
                INDEX,
                "inbound_updates",
                ["received_at"],
                postgresql_concurrently=True,
                if_not_exists=True,
            )
    else:
        op.create_index(INDEX, "inbound_updates", ["received_at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="inbound_updates")
    with op.batch_alter_table("inbound_updates") as batch:
        batch.drop_column("generation")
