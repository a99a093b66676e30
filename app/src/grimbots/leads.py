"""Leads: one per bot and Telegram user, created or found concurrently without duplicates."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grimbots.db import get_db
from grimbots.models import BlockedUser, Lead, utcnow


def upsert_lead(bot_id: int, user: dict, chat_id: int) -> Lead:
    """Find or create the lead; the unique (bot, user) constraint settles races."""
    db = get_db()
    user_id = int(user["id"])

    def find(session: Session) -> Lead | None:
        return session.scalar(
            select(Lead).where(Lead.bot_id == bot_id, Lead.telegram_user_id == user_id)
        )

    with db.session() as session:
        lead = find(session)
        if lead is not None:
            return lead
    try:
        with db.session() as session:
            lead = Lead(
                bot_id=bot_id,
                telegram_user_id=user_id,
                chat_id=chat_id,
                first_name=(user.get("first_name") or "")[:200] or None,
                username=(user.get("username") or "")[:64] or None,
            )
            session.add(lead)
            session.flush()
            return lead
    except IntegrityError:
        with db.session() as session:
            lead = find(session)
            assert lead is not None
            return lead


def set_blocked(bot_id: int, telegram_user_id: int, blocked: bool) -> None:
    """Mark (or clear) a user who blocked the bot, so broadcasts skip them."""
    db = get_db()
    with db.session() as session:
        session.execute(
            update(Lead)
            .where(Lead.bot_id == bot_id, Lead.telegram_user_id == telegram_user_id)
            .values(blocked=blocked)
        )
        existing = session.scalar(
            select(BlockedUser).where(
                BlockedUser.bot_id == bot_id, BlockedUser.telegram_user_id == telegram_user_id
            )
        )
        if blocked and existing is None:
            session.add(
                BlockedUser(bot_id=bot_id, telegram_user_id=telegram_user_id, blocked_at=utcnow())
            )
        elif not blocked and existing is not None:
            session.delete(existing)
    # Two workers marking the same user at once: the loser's insert conflicts; state is right.
