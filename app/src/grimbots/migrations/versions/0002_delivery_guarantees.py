"""Columns and table for the delivery guarantees under faults.

- idempotency_keys: one row per committed transaction (and per API Idempotency-Key), so a
  transaction retried after its commit's answer was lost does not act twice.
- campaigns.progressed_at: when a batch last moved the campaign, so the campaign reconciler
  sees a chain that stopped moving.
- leads.downsell_root_id: one downsell chain per lead and funnel generation.
- outbound_messages.claimed_by: the RQ job holding a claim, so that job's own retry takes the
  claim over at once instead of waiting for the lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(200), nullable=False, unique=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("progressed_at", TS, nullable=True))
    with op.batch_alter_table("leads") as batch:
        batch.add_column(sa.Column("downsell_root_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("outbound_messages") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbound_messages") as batch:
        batch.drop_column("claimed_by")
    with op.batch_alter_table("leads") as batch:
        batch.drop_column("downsell_root_id")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("progressed_at")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
