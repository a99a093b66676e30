"""Create the schema of grimbots.models (sellers, funnels, bots, pools, tracking, outbox, ...).

Written out table by table (reviewed against the models, not ``create_all``), so later revisions
have a fixed starting point. Runs on SQLite (phase 1) and PostgreSQL 15 (phase 2+); integer
primary keys become SERIAL on PostgreSQL, timestamps are timezone-aware there and ISO text on
SQLite, and the unique constraints are the last layer against duplicates.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _fk(column: str, target: str, ondelete: str = "CASCADE", nullable: bool = False) -> sa.Column:
    return sa.Column(
        column, sa.Integer(), sa.ForeignKey(target, ondelete=ondelete), nullable=nullable
    )


def _create_sellers_funnels_and_bots() -> None:
    op.create_table(
        "sellers",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        # sha256 hex of the bearer token; the token itself is never stored.
        sa.Column("api_token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
    )

    op.create_table(
        "funnels",
        _id(),
        _fk("seller_id", "sellers.id"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("welcome_text", sa.Text(), nullable=False),
        sa.Column("welcome_media_type", sa.String(10), nullable=True),
        sa.Column("welcome_media_url", sa.String(2048), nullable=True),
        sa.Column("access_link", sa.String(2048), nullable=False),
        # Plain integer on purpose (as in the model): offers reference funnels, not the reverse.
        sa.Column("order_bump_offer_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_funnels_seller_id", "funnels", ["seller_id"])

    op.create_table(
        "offers",
        _id(),
        _fk("funnel_id", "funnels.id"),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
    )
    op.create_index("ix_offers_funnel_id", "offers", ["funnel_id"])

    op.create_table(
        "downsells",
        _id(),
        _fk("funnel_id", "funnels.id"),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("delay_minutes", sa.Integer(), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_downsells_funnel_id", "downsells", ["funnel_id"])

    op.create_table(
        "bots",
        _id(),
        _fk("seller_id", "sellers.id"),
        _fk("funnel_id", "funnels.id", ondelete="SET NULL", nullable=True),
        sa.Column("token", sa.String(100), nullable=False),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("webhook_secret", sa.String(256), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_bots_seller_id", "bots", ["seller_id"])


def _create_pools_clicks_and_leads() -> None:
    op.create_table(
        "redirect_pools",
        _id(),
        _fk("seller_id", "sellers.id"),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column("strategy", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_redirect_pools_seller_id", "redirect_pools", ["seller_id"])

    op.create_table(
        "pool_bots",
        _id(),
        _fk("pool_id", "redirect_pools.id"),
        _fk("bot_id", "bots.id"),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.UniqueConstraint("pool_id", "bot_id", name="uq_pool_bot"),
    )
    op.create_index("ix_pool_bots_bot_id", "pool_bots", ["bot_id"])

    op.create_table(
        "clicks",
        _id(),
        _fk("pool_id", "redirect_pools.id"),
        _fk("bot_id", "bots.id"),
        sa.Column("token", sa.String(32), nullable=False, unique=True),
        sa.Column("utm_source", sa.String(200), nullable=True),
        sa.Column("utm_medium", sa.String(200), nullable=True),
        sa.Column("utm_campaign", sa.String(200), nullable=True),
        sa.Column("utm_content", sa.String(200), nullable=True),
        sa.Column("utm_term", sa.String(200), nullable=True),
        sa.Column("fbclid", sa.String(500), nullable=True),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("user_agent", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_clicks_bot_id", "clicks", ["bot_id"])
    op.create_index("ix_clicks_created", "clicks", ["created_at"])

    op.create_table(
        "leads",
        _id(),
        _fk("bot_id", "bots.id"),
        sa.Column("telegram_user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("first_name", sa.String(200), nullable=True),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("click_token", sa.String(32), nullable=True),
        sa.Column("utm_source", sa.String(200), nullable=True),
        sa.Column("utm_medium", sa.String(200), nullable=True),
        sa.Column("utm_campaign", sa.String(200), nullable=True),
        sa.Column("utm_content", sa.String(200), nullable=True),
        sa.Column("utm_term", sa.String(200), nullable=True),
        sa.Column("fbclid", sa.String(500), nullable=True),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.Column("paid", sa.Boolean(), nullable=False),
        # update_id of the latest /start (Telegram update ids need 64 bits).
        sa.Column("funnel_generation", sa.BigInteger(), nullable=False),
        sa.Column("last_start_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("bot_id", "telegram_user_id", name="uq_lead_bot_user"),
    )
    op.create_index("ix_leads_bot_id", "leads", ["bot_id"])


def _create_updates_messages_and_payments() -> None:
    op.create_table(
        "inbound_updates",
        _id(),
        _fk("bot_id", "bots.id"),
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("processed_at", TS, nullable=True),
        sa.UniqueConstraint("bot_id", "update_id", name="uq_inbound_bot_update"),
    )

    op.create_table(
        "outbound_messages",
        _id(),
        _fk("bot_id", "bots.id"),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("method", sa.String(40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("claimed_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("telegram_message_id", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
    )
    op.create_index("ix_outbound_messages_bot_id", "outbound_messages", ["bot_id"])

    op.create_table(
        "payments",
        _id(),
        _fk("seller_id", "sellers.id"),
        _fk("bot_id", "bots.id"),
        _fk("lead_id", "leads.id"),
        _fk("offer_id", "offers.id", ondelete="SET NULL", nullable=True),
        sa.Column("downsell_position", sa.Integer(), nullable=True),
        sa.Column("gateway", sa.String(40), nullable=False),
        sa.Column("gateway_txid", sa.String(100), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("pix_code", sa.Text(), nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("paid_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("gateway", "gateway_txid", name="uq_payment_gateway_tx"),
    )
    op.create_index("ix_payments_seller_id", "payments", ["seller_id"])
    op.create_index("ix_payments_bot_id", "payments", ["bot_id"])
    op.create_index("ix_payments_lead_id", "payments", ["lead_id"])
    op.create_index("ix_payments_status", "payments", ["status"])


def _create_campaigns_and_blocklist() -> None:
    op.create_table(
        "campaigns",
        _id(),
        _fk("seller_id", "sellers.id"),
        _fk("bot_id", "bots.id"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("media_type", sa.String(10), nullable=True),
        sa.Column("media_url", sa.String(2048), nullable=True),
        sa.Column("buttons", sa.JSON(), nullable=False),
        sa.Column("audience", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("skipped_blocked", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_campaigns_seller_id", "campaigns", ["seller_id"])
    op.create_index("ix_campaigns_bot_id", "campaigns", ["bot_id"])

    op.create_table(
        "blocked_users",
        _id(),
        _fk("bot_id", "bots.id"),
        sa.Column("telegram_user_id", sa.BigInteger(), nullable=False),
        sa.Column("blocked_at", TS, nullable=False),
        sa.UniqueConstraint("bot_id", "telegram_user_id", name="uq_blocked_bot_user"),
    )


def upgrade() -> None:
    # Parents before children: each group only references tables created before it.
    _create_sellers_funnels_and_bots()
    _create_pools_clicks_and_leads()
    _create_updates_messages_and_payments()
    _create_campaigns_and_blocklist()


def downgrade() -> None:
    for table in (
        "blocked_users",
        "campaigns",
        "payments",
        "outbound_messages",
        "inbound_updates",
        "leads",
        "clicks",
        "pool_bots",
        "redirect_pools",
        "bots",
        "downsells",
        "offers",
        "funnels",
        "sellers",
    ):
        op.drop_table(table)  # indexes go with their table
