"""/api/bots: a seller's Telegram bots. The token and the webhook secret are write-only."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime

from flask import g, jsonify
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from grimbots import stats
from grimbots.api.common import (
    CONFLICT,
    Input,
    Page,
    bp,
    change_owned,
    invalidate_bot_cache,
    operation,
    owned,
    page_of,
    paged,
    query,
    text,
    ts,
    write,
)
from grimbots.api.common import body as read_body
from grimbots.db import get_db
from grimbots.errors import where
from grimbots.models import Bot, Funnel
from grimbots.route_schemas import Stats, optional

log = logging.getLogger(__name__)

BOT_TOKEN = text(100, pattern=r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,80}$")
BOT_USERNAME = text(32, pattern=r"^[A-Za-z][A-Za-z0-9_]{4,31}$")
# What Telegram accepts as setWebhook's secret_token.
WEBHOOK_SECRET = text(256, pattern=r"^[A-Za-z0-9_-]{1,256}$")
TAKEN = "a bot with this username already exists"


class BotWrite(Input):
    token: BOT_TOKEN = optional(description="the bot's Telegram token (write-only)")
    username: BOT_USERNAME = optional()
    webhook_secret: WEBHOOK_SECRET = optional(description="write-only; generated when absent")
    funnel_id: int | None = optional()
    active: bool = optional()


class BotCreate(BotWrite):
    token: BOT_TOKEN = Field(description="the bot's Telegram token (write-only)")
    username: BOT_USERNAME


class BotOut(BaseModel):
    id: int
    username: str
    funnel_id: int | None
    active: bool
    status: str
    created_at: datetime | None


def bot_json(bot: Bot) -> dict:
    # The token and the webhook secret are write-only: never echoed back.
    return {
        "id": bot.id,
        "username": bot.username,
        "funnel_id": bot.funnel_id,
        "active": bot.active,
        "status": bot.status,
        "created_at": ts(bot.created_at),
    }


def _apply(session: Session, bot: Bot, data: BotWrite) -> None:
    given = data.model_fields_set
    for name in ("token", "username", "webhook_secret", "active"):
        if name in given:
            setattr(bot, name, getattr(data, name))
    if "funnel_id" in given:
        funnel_id = data.funnel_id
        if funnel_id is not None:
            funnel_id = owned(session, Funnel, funnel_id, field="funnel_id").id
        bot.funnel_id = funnel_id


@bp.get("/bots")
@operation("List the seller's bots", (200, "a page", page_of(BotOut)), query=Page)
def list_bots():
    page = query(Page)
    with get_db().read_session() as session:
        rows = select(Bot).where(Bot.seller_id == g.seller_id).order_by(Bot.id)
        return jsonify(paged(session, rows, bot_json, page))


@bp.post("/bots")
@operation("Create a bot", (201, "created", BotOut), body=BotCreate, conflict=CONFLICT)
def create_bot():
    data = read_body(BotCreate)

    def fn(session: Session) -> dict:
        bot = Bot(seller_id=g.seller_id, active=True, status="ok")
        if "webhook_secret" not in data.model_fields_set:
            bot.webhook_secret = secrets.token_urlsafe(32)
        _apply(session, bot, data)
        session.add(bot)
        session.flush()
        return bot_json(bot)

    result = write(fn, TAKEN)
    # The webhook briefly caches unknown ids as missing: make the new bot reachable at once.
    invalidate_bot_cache(result["id"])
    return jsonify(result), 201


@bp.get("/bots/<int:bot_id>")
@operation("One bot", (200, "bot", BotOut), by_id=True)
def get_bot(bot_id: int):
    with get_db().session() as session:
        return jsonify(bot_json(owned(session, Bot, bot_id)))


@bp.route("/bots/<int:bot_id>", methods=["PATCH", "PUT"])
@operation(
    "Change a bot",
    (200, "bot", BotOut),
    by_id=True,
    conflict=CONFLICT,
    body=BotWrite,
    operation_ids={"PUT": "replace_bot"},
    summaries={"PUT": "Change a bot (same as PATCH)"},
)
def update_bot(bot_id: int):
    data = read_body(BotWrite)
    result = change_owned(
        Bot, bot_id, lambda session, bot: _apply(session, bot, data), bot_json, TAKEN
    )
    invalidate_bot_cache(bot_id)
    if result["active"] and "active" in data.model_fields_set and data.active is True:
        _resume_deliveries(bot_id)
    return jsonify(result)


def _resume_deliveries(bot_id: int) -> None:
    """Send what was held while the bot was inactive. Best effort: the reconcilers do it too."""
    from grimbots import reconcile

    try:
        reconcile.resume_bot(bot_id)
    except Exception as exc:  # noqa: BLE001 - the change is committed; reconcilers catch up
        log.warning(
            "held deliveries not enqueued yet",
            extra={"bot_id": bot_id, "error_type": type(exc).__name__, "where": where(exc)},
        )


def _deactivate(session: Session, bot: Bot) -> None:
    bot.active = False


@bp.delete("/bots/<int:bot_id>")
@operation("Delete a bot", (200, "deleted", BotOut), by_id=True, conflict=CONFLICT)
def delete_bot(bot_id: int):
    """Deactivate: the webhook stops answering for it, but its leads and sales stay on record."""
    result = change_owned(Bot, bot_id, _deactivate, bot_json)
    invalidate_bot_cache(bot_id)
    return jsonify(result)


@bp.get("/bots/<int:bot_id>/stats")
@operation("The bot's clicks, leads, sales and revenue", (200, "stats", Stats), by_id=True)
def get_bot_stats(bot_id: int):
    with get_db().read_session() as session:
        bot = owned(session, Bot, bot_id)
        return jsonify(stats.bot_stats(session, bot.id))
