"""The data model (SQLAlchemy 2). Portable across SQLite and PostgreSQL 15.

Unique constraints are the last layer against duplicates: one inbound update per bot and
update_id, one outbound message per idempotency key, one payment per gateway transaction,
one lead per bot and Telegram user.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC timestamps on both backends.

    PostgreSQL stores timestamptz; SQLite stores text without an offset, so values read back
    are marked UTC again and comparisons never mix naive and aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if isinstance(value, str):  # ISO text, e.g. rows read raw from SQLite during migration
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


Timestamp = UTCDateTime()


class Seller(Base):
    __tablename__ = "sellers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # sha256 hex of the bearer token: the token itself is shown once and never stored.
    api_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Funnel(Base):
    __tablename__ = "funnels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("sellers.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    welcome_text: Mapped[str] = mapped_column(Text, default="")
    # "photo", "video" or None for a text-only welcome.
    welcome_media_type: Mapped[str | None] = mapped_column(String(10), nullable=True)
    welcome_media_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    # Delivered after payment (VIP group invite or content link).
    access_link: Mapped[str] = mapped_column(String(2048), default="")
    # Offer proposed as an extra before the charge of the main offer.
    order_bump_offer_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    offers: Mapped[list[Offer]] = relationship(
        back_populates="funnel", cascade="all, delete-orphan", order_by="Offer.position"
    )
    downsells: Mapped[list[Downsell]] = relationship(
        back_populates="funnel", cascade="all, delete-orphan", order_by="Downsell.position"
    )


class Offer(Base):
    __tablename__ = "offers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    funnel_id: Mapped[int] = mapped_column(ForeignKey("funnels.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(100))
    price_cents: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0)

    funnel: Mapped[Funnel] = relationship(back_populates="offers")


class Downsell(Base):
    __tablename__ = "downsells"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    funnel_id: Mapped[int] = mapped_column(ForeignKey("funnels.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    delay_minutes: Mapped[int] = mapped_column(Integer)
    price_cents: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text, default="")

    funnel: Mapped[Funnel] = relationship(back_populates="downsells")


class Bot(Base):
    __tablename__ = "bots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("sellers.id", ondelete="CASCADE"), index=True)
    funnel_id: Mapped[int | None] = mapped_column(
        ForeignKey("funnels.id", ondelete="SET NULL"), nullable=True
    )
    token: Mapped[str] = mapped_column(String(100))
    username: Mapped[str] = mapped_column(String(64), unique=True)
    webhook_secret: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # "ok", "down" or "banned": pools skip bots that are not ok.
    status: Mapped[str] = mapped_column(String(10), default="ok")
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    funnel: Mapped[Funnel | None] = relationship()


class RedirectPool(Base):
    __tablename__ = "redirect_pools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("sellers.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    # "round_robin" or "weighted".
    strategy: Mapped[str] = mapped_column(String(20), default="round_robin")
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    members: Mapped[list[PoolBot]] = relationship(
        back_populates="pool", cascade="all, delete-orphan", order_by="PoolBot.id"
    )


class PoolBot(Base):
    __tablename__ = "pool_bots"
    __table_args__ = (UniqueConstraint("pool_id", "bot_id", name="uq_pool_bot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("redirect_pools.id", ondelete="CASCADE"))
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    weight: Mapped[int] = mapped_column(Integer, default=1)

    pool: Mapped[RedirectPool] = relationship(back_populates="members")
    bot: Mapped[Bot] = relationship()


class Click(Base):
    __tablename__ = "clicks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("redirect_pools.id", ondelete="CASCADE"))
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    token: Mapped[str] = mapped_column(String(32), unique=True)
    utm_source: Mapped[str | None] = mapped_column(String(200), nullable=True)
    utm_medium: Mapped[str | None] = mapped_column(String(200), nullable=True)
    utm_campaign: Mapped[str | None] = mapped_column(String(200), nullable=True)
    utm_content: Mapped[str | None] = mapped_column(String(200), nullable=True)
    utm_term: Mapped[str | None] = mapped_column(String(200), nullable=True)
    fbclid: Mapped[str | None] = mapped_column(String(500), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (UniqueConstraint("bot_id", "telegram_user_id", name="uq_lead_bot_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    first_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    username: Mapped[str | None] = mapped_column(String(64), nullable=True)
    click_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    utm_source: Mapped[str | None] = mapped_column(String(200), nullable=True)
    utm_medium: Mapped[str | None] = mapped_column(String(200), nullable=True)
    utm_campaign: Mapped[str | None] = mapped_column(String(200), nullable=True)
    utm_content: Mapped[str | None] = mapped_column(String(200), nullable=True)
    utm_term: Mapped[str | None] = mapped_column(String(200), nullable=True)
    fbclid: Mapped[str | None] = mapped_column(String(500), nullable=True)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    paid: Mapped[bool] = mapped_column(Boolean, default=False)
    # The latest /start's generation (inbound_updates.generation; an update_id before):
    # the funnel resets and downsells of older starts lapse.
    funnel_generation: Mapped[int] = mapped_column(BigInteger, default=0)
    last_start_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    # The charge whose downsell chain runs for this funnel generation: one chain per lead, so two
    # charges never start two chains (reset by a new /start).
    downsell_root_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class InboundUpdate(Base):
    __tablename__ = "inbound_updates"
    __table_args__ = (UniqueConstraint("bot_id", "update_id", name="uq_inbound_bot_update"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    update_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    # The funnel generation a /start in this update begins (its receipt time in ms), kept so
    # a retried job uses the same one; NULL on rows of older versions (they used update_id).
    generation: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Set when every step of processing finished; a retried job resumes an unfinished update.
    processed_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class OutboundMessage(Base):
    """The outbox: written before the send, so a retry never sends the same message twice."""

    __tablename__ = "outbound_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    method: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSON)
    # pending -> sent | failed | blocked | suppressed (a twin stopped by a send lock)
    #   | ambiguous (may have reached Telegram, never repeated) | cancelled (no longer due)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    claimed_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    # The RQ job holding the claim: when that same job runs again (retried after a failure or
    # after its worker died), its earlier run is over and the claim is not someone else's.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("gateway", "gateway_txid", name="uq_payment_gateway_tx"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("sellers.id", ondelete="CASCADE"), index=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    offer_id: Mapped[int | None] = mapped_column(
        ForeignKey("offers.id", ondelete="SET NULL"), nullable=True
    )
    # Which downsell (position) produced this charge; None for the main offer.
    downsell_position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gateway: Mapped[str] = mapped_column(String(40))
    gateway_txid: Mapped[str] = mapped_column(String(100))
    amount_cents: Mapped[int] = mapped_column(Integer)
    # pending -> paid | expired
    status: Mapped[str] = mapped_column(String(10), default="pending")
    pix_code: Mapped[str] = mapped_column(Text, default="")
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seller_id: Mapped[int] = mapped_column(ForeignKey("sellers.id", ondelete="CASCADE"), index=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text, default="")
    media_type: Mapped[str | None] = mapped_column(String(10), nullable=True)
    media_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    # Inline buttons: [{"text": ..., "url": ...}]
    buttons: Mapped[list] = mapped_column(JSON, default=list)
    # "all", "paid" or "unpaid"
    audience: Mapped[str] = mapped_column(String(10), default="all")
    # draft -> running -> finished | stopped
    status: Mapped[str] = mapped_column(String(10), default="draft")
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Resume point: the highest lead id already handled.
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped_blocked: Mapped[int] = mapped_column(Integer, default=0)
    # When a batch last moved the campaign (the campaign reconciler's clock).
    progressed_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)


class BlockedUser(Base):
    __tablename__ = "blocked_users"
    __table_args__ = (UniqueConstraint("bot_id", "telegram_user_id", name="uq_blocked_bot_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"))
    telegram_user_id: Mapped[int] = mapped_column(BigInteger)
    blocked_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class IdempotencyKey(Base):
    """A transaction that committed: written in the transaction itself, so a retry whose first
    commit's answer was lost finds it and returns the stored result instead of acting twice."""

    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, index=True)


Index("ix_clicks_created", Click.created_at)
Index("ix_inbound_updates_received_at", InboundUpdate.received_at)
Index("ix_payments_status", Payment.status)

# Tables in foreign-key order: the order SQLite -> PostgreSQL migration copies them in.
TABLES_IN_FK_ORDER = [table.name for table in Base.metadata.sorted_tables]
