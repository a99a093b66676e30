"""The sellers' JSON admin API under /api: bots, funnels, pools, campaigns, stats.

Every request carries a seller's bearer token and every query is scoped by that seller: another
seller's object answers 404 (never 403), so ids do not leak. Every input is validated here, with
a 400 naming the field, so nothing a caller sends can reach the database malformed (a NUL byte
or an over-long string would otherwise be a 500 on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grimbots import campaigns as campaign_jobs
from grimbots import jsonbody, stats
from grimbots.auth import bearer_token, seller_for_token
from grimbots.db import get_db
from grimbots.errors import ApiError, error_response, where
from grimbots.models import Bot, Campaign, Downsell, Funnel, Offer, PoolBot, RedirectPool

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_ID = 2**31 - 1
MAX_PRICE_CENTS = 10_000_000  # R$ 100.000,00
MAX_TEXT = 4096  # Telegram's message limit (captions over 1,024 go as a separate message)
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
BOT_TOKEN_RE = re.compile(r"\d{1,20}:[A-Za-z0-9_-]{20,80}")
BOT_USERNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{4,31}")
# What Telegram accepts as setWebhook's secret_token.
WEBHOOK_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
SLUG_RE = re.compile(r"[a-z0-9-]{3,64}")
URL_RE = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)
BUTTON_URL_RE = re.compile(r"(https?|tg)://[^\s]+", re.IGNORECASE)
# A Telegram file_id, as an alternative to a media URL.
FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{10,200}")
MEDIA_TYPES = ("photo", "video")
STRATEGIES = ("round_robin", "weighted")
AUDIENCES = ("all", "paid", "unpaid")
MAX_OFFERS = MAX_DOWNSELLS = 10
MAX_BUTTONS = 10
MAX_POOL_BOTS = 100


# -- authentication ------------------------------------------------------------------------------


@bp.before_request
def _authenticate():
    token = bearer_token(request)
    seller_id = seller_for_token(token) if token else None
    if seller_id is None:
        response, status = error_response(401, "missing or invalid bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="grimbots"'
        return response, status
    g.seller_id = seller_id
    return None


# -- input validation ----------------------------------------------------------------------------


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}", field=field)


def _text(
    value: Any,
    field: str,
    *,
    max_len: int,
    min_len: int = 1,
    pattern: re.Pattern | None = None,
    nullable: bool = False,
    hint: str = "",
) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise _bad(field, "must be a string")
    if "\x00" in value:
        raise _bad(field, "must not contain NUL characters")
    if len(value) < min_len:
        raise _bad(field, "must not be empty" if min_len == 1 else f"at least {min_len} chars")
    if len(value) > max_len:
        raise _bad(field, f"at most {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _bad(field, hint or "has an invalid format")
    return value


def _int(value: Any, field: str, *, low: int, high: int, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(field, "must be an integer")
    if not low <= value <= high:
        raise _bad(field, f"must be between {low} and {high}")
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(field, "must be true or false")
    return value


def _choice(value: Any, field: str, choices: tuple[str, ...], nullable: bool = False):
    if value is None and nullable:
        return None
    if value not in choices:
        allowed = ", ".join(choices) + (" or null" if nullable else "")
        raise _bad(field, f"must be one of {allowed}")
    return value


def _list(value: Any, field: str, max_items: int) -> list:
    if not isinstance(value, list):
        raise _bad(field, "must be a list")
    if len(value) > max_items:
        raise _bad(field, f"at most {max_items} items")
    return value


def _object(value: Any, field: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise _bad(field, "must be an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _bad(field, f"unknown field(s) {', '.join(map(str, unknown))}")
    return value


def _body(allowed: set[str], required: set[str] = frozenset()) -> dict:
    try:
        data = jsonbody.loads(request.get_data(cache=True))
    except jsonbody.BadJson as exc:
        raise ApiError(400, str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(map(str, unknown))}", fields=unknown)
    missing = sorted(required - set(data))
    if missing:
        raise ApiError(400, f"missing field(s): {', '.join(missing)}", fields=missing)
    return data


def _media(media_type: Any, media_url: Any, prefix: str) -> tuple[str | None, str | None]:
    media_type = _choice(media_type, f"{prefix}_type", MEDIA_TYPES, nullable=True)
    if media_type is None:
        if media_url not in (None, ""):
            raise _bad(f"{prefix}_url", f"needs {prefix}_type photo or video")
        return None, None
    media_url = _text(media_url, f"{prefix}_url", max_len=2048)
    if not (URL_RE.fullmatch(media_url) or FILE_ID_RE.fullmatch(media_url)):
        raise _bad(f"{prefix}_url", "must be an http(s) URL or a Telegram file_id")
    return media_type, media_url


def _page() -> tuple[int, int]:
    def number(name: str, default: int, low: int, high: int) -> int:
        raw = request.args.get(name)
        if raw is None:
            return default
        # isdigit() alone is true for "²" and "٣", which int() refuses or reads unexpectedly.
        if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
            raise ApiError(400, f"{name}: must be an integer between {low} and {high}")
        return int(raw)

    return number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT), number("offset", 0, 0, MAX_ID)


def _paged(session: Session, query, serialize: Callable[[Any], dict]) -> dict:
    limit, offset = _page()
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    items = session.execute(query.limit(limit).offset(offset)).scalars().all()
    return {
        "items": [serialize(item) for item in items],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


# -- tenancy -------------------------------------------------------------------------------------


def _owned(session: Session, model, obj_id: int, *, field: str | None = None):
    """The seller's object with this id; 404 (or 400 naming the field) for anyone else's."""
    obj = None
    # type() and not isinstance(): true is an int to Python, never an id here.
    if type(obj_id) is int and 0 < obj_id <= MAX_ID:
        obj = session.execute(
            select(model).where(model.id == obj_id, model.seller_id == g.seller_id)
        ).scalar_one_or_none()
    if obj is None:
        name = model.__name__.lower().replace("redirectpool", "pool")
        if field is not None:
            raise _bad(field, f"{name} {obj_id} not found")
        raise ApiError(404, f"{name} not found")
    return obj


def _idempotency_key() -> str | None:
    """The caller's Idempotency-Key, scoped to the seller and the route (None when absent).

    A create or step repeated with the same key returns the first result instead of acting
    again (a client retrying after a lost answer)."""
    given = request.headers.get("Idempotency-Key")
    if not given:
        return None
    scope = f"{g.seller_id}\x1f{request.method}\x1f{request.path}\x1f{given}"
    return "api:" + hashlib.sha256(scope.encode("utf-8", "surrogatepass")).hexdigest()


def _write(fn: Callable[[Session], Any], conflict: str = "conflicts with an existing object"):
    """Run fn in a transaction (retried on failover, never applied twice); unique violations
    answer 409."""
    try:
        return get_db().transaction(fn, key=_idempotency_key())
    except IntegrityError as exc:
        # The database's text quotes the conflicting values (a username, a token): not logged.
        log.info("api write conflict", extra={"error_type": type(exc.orig).__name__})
        raise ApiError(409, conflict) from None


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


# -- bots ----------------------------------------------------------------------------------------


def _bot_json(bot: Bot) -> dict:
    # The token and the webhook secret are write-only: never echoed back.
    return {
        "id": bot.id,
        "username": bot.username,
        "funnel_id": bot.funnel_id,
        "active": bot.active,
        "status": bot.status,
        "created_at": _ts(bot.created_at),
    }


def _invalidate_bot_cache(bot_id: int) -> None:
    """Drop the webhook's cached bot meta (active flag, secret) after a change."""
    try:
        webhook = importlib.import_module("grimbots.webhook")
    except ImportError:
        return
    invalidate = getattr(webhook, "invalidate_bot_cache", None)
    if invalidate is None:
        return
    try:
        invalidate(bot_id)
    except Exception as exc:  # the cache expires on its own; the change is committed anyway
        log.warning(
            "could not invalidate the cached bot meta",
            extra={"bot_id": bot_id, "error_type": type(exc).__name__, "where": where(exc)},
        )


def _apply_bot(session: Session, bot: Bot, data: dict) -> None:
    if "token" in data:
        bot.token = _text(
            data["token"],
            "token",
            max_len=100,
            pattern=BOT_TOKEN_RE,
            hint="must look like a Telegram bot token (123456:ABC...)",
        )
    if "username" in data:
        username = _text(
            data["username"],
            "username",
            max_len=32,
            pattern=BOT_USERNAME_RE,
            hint="5-32 letters, digits or _, starting with a letter",
        )
        bot.username = username.lstrip("@")
    if "webhook_secret" in data:
        bot.webhook_secret = _text(
            data["webhook_secret"],
            "webhook_secret",
            max_len=256,
            pattern=WEBHOOK_SECRET_RE,
            hint="1-256 characters among A-Z a-z 0-9 _ -",
        )
    if "funnel_id" in data:
        funnel_id = data["funnel_id"]
        if funnel_id is not None:
            funnel_id = _owned(session, Funnel, funnel_id, field="funnel_id").id
        bot.funnel_id = funnel_id
    if "active" in data:
        bot.active = _bool(data["active"], "active")


BOT_FIELDS = {"token", "username", "webhook_secret", "funnel_id", "active"}


@bp.get("/bots")
def list_bots():
    with get_db().read_session() as session:
        query = select(Bot).where(Bot.seller_id == g.seller_id).order_by(Bot.id)
        return jsonify(_paged(session, query, _bot_json))


@bp.post("/bots")
def create_bot():
    data = _body(BOT_FIELDS, {"token", "username"})

    def fn(session: Session) -> dict:
        bot = Bot(seller_id=g.seller_id, active=True, status="ok")
        if "webhook_secret" not in data:
            bot.webhook_secret = secrets.token_urlsafe(32)
        _apply_bot(session, bot, data)
        session.add(bot)
        session.flush()
        return _bot_json(bot)

    result = _write(fn, "a bot with this username already exists")
    # The webhook briefly caches unknown ids as missing: make the new bot reachable at once.
    _invalidate_bot_cache(result["id"])
    return jsonify(result), 201


@bp.get("/bots/<int:bot_id>")
def get_bot(bot_id: int):
    with get_db().session() as session:
        return jsonify(_bot_json(_owned(session, Bot, bot_id)))


@bp.route("/bots/<int:bot_id>", methods=["PATCH", "PUT"])
def update_bot(bot_id: int):
    data = _body(BOT_FIELDS)

    def fn(session: Session) -> dict:
        bot = _owned(session, Bot, bot_id)
        _apply_bot(session, bot, data)
        session.flush()
        return _bot_json(bot)

    result = _write(fn, "a bot with this username already exists")
    _invalidate_bot_cache(bot_id)
    if result["active"] and data.get("active") is True:
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


@bp.delete("/bots/<int:bot_id>")
def delete_bot(bot_id: int):
    """Deactivate: the webhook stops answering for it, but its leads and sales stay on record."""

    def fn(session: Session) -> dict:
        bot = _owned(session, Bot, bot_id)
        bot.active = False
        session.flush()
        return _bot_json(bot)

    result = _write(fn)
    _invalidate_bot_cache(bot_id)
    return jsonify(result)


@bp.get("/bots/<int:bot_id>/stats")
def get_bot_stats(bot_id: int):
    with get_db().read_session() as session:
        bot = _owned(session, Bot, bot_id)
        return jsonify(stats.bot_stats(session, bot.id))


# -- funnels -------------------------------------------------------------------------------------

FUNNEL_FIELDS = {
    "name",
    "welcome_text",
    "welcome_media_type",
    "welcome_media_url",
    "access_link",
    "offers",
    "downsells",
    "order_bump_offer_id",
}


def _funnel_json(funnel: Funnel) -> dict:
    return {
        "id": funnel.id,
        "name": funnel.name,
        "welcome_text": funnel.welcome_text,
        "welcome_media_type": funnel.welcome_media_type,
        "welcome_media_url": funnel.welcome_media_url,
        "access_link": funnel.access_link,
        "order_bump_offer_id": funnel.order_bump_offer_id,
        "offers": [
            {"id": o.id, "title": o.title, "price_cents": o.price_cents} for o in funnel.offers
        ],
        "downsells": [
            {
                "id": d.id,
                "delay_minutes": d.delay_minutes,
                "price_cents": d.price_cents,
                "text": d.text,
            }
            for d in funnel.downsells
        ],
        "created_at": _ts(funnel.created_at),
    }


def _price(value: Any, field: str) -> int:
    return _int(value, field, low=1, high=MAX_PRICE_CENTS)


def _nested(
    items: list, existing: list, field: str, allowed: set[str], build: Callable[[dict, str], dict]
) -> list[tuple[Any, dict]]:
    """Pair each submitted item with the existing row it updates (by id) or None (new)."""
    by_id = {row.id: row for row in existing}
    seen: set[int] = set()
    out = []
    for index, raw in enumerate(items):
        where = f"{field}[{index}]"
        item = _object(raw, where, allowed | {"id"})
        row = None
        if "id" in item:
            item_id = _int(item["id"], f"{where}.id", low=1, high=MAX_ID)
            row = by_id.get(item_id)
            if row is None or item_id in seen:
                raise _bad(
                    f"{where}.id",
                    f"not an offer of this funnel: {item_id}"
                    if field == "offers"
                    else f"not a downsell of this funnel: {item_id}",
                )
            seen.add(item_id)
        out.append((row, build(item, where)))
    return out


def _offer_values(item: dict, where: str) -> dict:
    missing = {"title", "price_cents"} - set(item)
    if missing:
        raise _bad(where, f"missing {', '.join(sorted(missing))}")
    return {
        # The title is the offer's button text.
        "title": _text(item["title"], f"{where}.title", max_len=64),
        "price_cents": _price(item["price_cents"], f"{where}.price_cents"),
    }


def _downsell_values(item: dict, where: str) -> dict:
    missing = {"delay_minutes", "price_cents", "text"} - set(item)
    if missing:
        raise _bad(where, f"missing {', '.join(sorted(missing))}")
    return {
        "delay_minutes": _int(item["delay_minutes"], f"{where}.delay_minutes", low=1, high=43200),
        "price_cents": _price(item["price_cents"], f"{where}.price_cents"),
        "text": _text(item["text"], f"{where}.text", max_len=MAX_TEXT),
    }


def _rows(pairs: list[tuple[Any, dict]], model) -> list:
    """Existing rows updated in place (their ids stay valid in sent buttons), new ones added."""
    rows = []
    for position, (row, values) in enumerate(pairs):
        row = row or model()
        for key, value in values.items():
            setattr(row, key, value)
        row.position = position
        rows.append(row)
    return rows


def _apply_funnel(session: Session, funnel: Funnel, data: dict) -> None:
    if "name" in data:
        funnel.name = _text(data["name"], "name", max_len=200)
    if "welcome_text" in data:
        funnel.welcome_text = _text(
            data["welcome_text"], "welcome_text", max_len=MAX_TEXT, min_len=0
        )
    if "welcome_media_type" in data or "welcome_media_url" in data:
        media_type = data.get("welcome_media_type", funnel.welcome_media_type)
        media_url = data.get("welcome_media_url", funnel.welcome_media_url)
        if "welcome_media_type" in data and data["welcome_media_type"] is None:
            media_url = data.get("welcome_media_url")
        funnel.welcome_media_type, funnel.welcome_media_url = _media(
            media_type, media_url, "welcome_media"
        )
    if "access_link" in data:
        link = _text(data["access_link"], "access_link", max_len=2048, min_len=0)
        if link and not BUTTON_URL_RE.fullmatch(link):
            raise _bad("access_link", "must be an http(s) or tg:// link")
        funnel.access_link = link
    if not funnel.welcome_text and not funnel.welcome_media_type:
        raise _bad("welcome_text", "a welcome text or welcome media is required")
    if "offers" in data:
        pairs = _nested(
            _list(data["offers"], "offers", MAX_OFFERS),
            list(funnel.offers),
            "offers",
            {"title", "price_cents"},
            _offer_values,
        )
        funnel.offers = _rows(pairs, Offer)
    if "downsells" in data:
        pairs = _nested(
            _list(data["downsells"], "downsells", MAX_DOWNSELLS),
            list(funnel.downsells),
            "downsells",
            {"delay_minutes", "price_cents", "text"},
            _downsell_values,
        )
        funnel.downsells = _rows(pairs, Downsell)
    session.flush()
    offer_ids = {offer.id for offer in funnel.offers}
    if "order_bump_offer_id" in data:
        bump = _int(
            data["order_bump_offer_id"], "order_bump_offer_id", low=1, high=MAX_ID, nullable=True
        )
        if bump is not None and bump not in offer_ids:
            raise _bad("order_bump_offer_id", "must be the id of one of this funnel's offers")
        funnel.order_bump_offer_id = bump
    elif funnel.order_bump_offer_id not in offer_ids:
        funnel.order_bump_offer_id = None  # its offer was removed


@bp.get("/funnels")
def list_funnels():
    with get_db().read_session() as session:
        query = select(Funnel).where(Funnel.seller_id == g.seller_id).order_by(Funnel.id)
        return jsonify(_paged(session, query, _funnel_json))


@bp.post("/funnels")
def create_funnel():
    data = _body(FUNNEL_FIELDS, {"name"})

    def fn(session: Session) -> dict:
        funnel = Funnel(seller_id=g.seller_id, welcome_text="", access_link="")
        session.add(funnel)
        _apply_funnel(session, funnel, data)
        session.flush()
        return _funnel_json(funnel)

    return jsonify(_write(fn)), 201


@bp.get("/funnels/<int:funnel_id>")
def get_funnel(funnel_id: int):
    with get_db().session() as session:
        return jsonify(_funnel_json(_owned(session, Funnel, funnel_id)))


@bp.route("/funnels/<int:funnel_id>", methods=["PATCH", "PUT"])
def update_funnel(funnel_id: int):
    data = _body(FUNNEL_FIELDS)

    def fn(session: Session) -> dict:
        funnel = _owned(session, Funnel, funnel_id)
        _apply_funnel(session, funnel, data)
        session.flush()
        return _funnel_json(funnel)

    return jsonify(_write(fn))


@bp.delete("/funnels/<int:funnel_id>")
def delete_funnel(funnel_id: int):
    """Delete a funnel; its bots keep running without one (funnel_id becomes null)."""

    def fn(session: Session) -> None:
        funnel = _owned(session, Funnel, funnel_id)
        for bot in session.execute(select(Bot).where(Bot.funnel_id == funnel.id)).scalars():
            bot.funnel_id = None
        session.delete(funnel)

    _write(fn)
    return jsonify({"ok": True, "id": funnel_id, "deleted": True})


# -- redirect pools ------------------------------------------------------------------------------

POOL_FIELDS = {"slug", "strategy", "bots"}


def _pool_json(pool: RedirectPool) -> dict:
    return {
        "id": pool.id,
        "slug": pool.slug,
        "strategy": pool.strategy,
        "bots": [{"bot_id": m.bot_id, "weight": m.weight} for m in pool.members],
        "created_at": _ts(pool.created_at),
    }


def _apply_pool(session: Session, pool: RedirectPool, data: dict) -> None:
    if "slug" in data:
        pool.slug = _text(
            data["slug"],
            "slug",
            max_len=64,
            pattern=SLUG_RE,
            hint="3-64 characters among a-z 0-9 -",
        )
    if "strategy" in data:
        pool.strategy = _choice(data["strategy"], "strategy", STRATEGIES)
    if "bots" in data:
        wanted: dict[int, int] = {}
        for index, raw in enumerate(_list(data["bots"], "bots", MAX_POOL_BOTS)):
            where = f"bots[{index}]"
            item = _object(raw, where, {"bot_id", "weight"})
            if "bot_id" not in item:
                raise _bad(where, "missing bot_id")
            bot = _owned(session, Bot, item["bot_id"], field=f"{where}.bot_id")
            if bot.id in wanted:
                raise _bad(f"{where}.bot_id", f"bot {bot.id} is listed twice")
            wanted[bot.id] = _int(item.get("weight", 1), f"{where}.weight", low=1, high=1000)
        # Update in place, so a bot that stays in the pool keeps its row (unique pool+bot).
        members = []
        for member in pool.members:
            if member.bot_id in wanted:
                member.weight = wanted.pop(member.bot_id)
                members.append(member)
        members += [PoolBot(bot_id=bot_id, weight=weight) for bot_id, weight in wanted.items()]
        pool.members = members


@bp.get("/pools")
def list_pools():
    with get_db().read_session() as session:
        query = (
            select(RedirectPool)
            .where(RedirectPool.seller_id == g.seller_id)
            .order_by(RedirectPool.id)
        )
        return jsonify(_paged(session, query, _pool_json))


@bp.post("/pools")
def create_pool():
    data = _body(POOL_FIELDS, {"slug"})

    def fn(session: Session) -> dict:
        pool = RedirectPool(seller_id=g.seller_id, strategy="round_robin")
        session.add(pool)
        _apply_pool(session, pool, data)
        session.flush()
        return _pool_json(pool)

    return jsonify(_write(fn, "a pool with this slug already exists")), 201


@bp.get("/pools/<int:pool_id>")
def get_pool(pool_id: int):
    with get_db().session() as session:
        return jsonify(_pool_json(_owned(session, RedirectPool, pool_id)))


@bp.route("/pools/<int:pool_id>", methods=["PATCH", "PUT"])
def update_pool(pool_id: int):
    data = _body(POOL_FIELDS)

    def fn(session: Session) -> dict:
        pool = _owned(session, RedirectPool, pool_id)
        _apply_pool(session, pool, data)
        session.flush()
        return _pool_json(pool)

    return jsonify(_write(fn, "a pool with this slug already exists"))


@bp.delete("/pools/<int:pool_id>")
def delete_pool(pool_id: int):
    def fn(session: Session) -> None:
        session.delete(_owned(session, RedirectPool, pool_id))

    _write(fn)
    return jsonify({"ok": True, "id": pool_id, "deleted": True})


@bp.get("/pools/<int:pool_id>/stats")
def get_pool_stats(pool_id: int):
    with get_db().read_session() as session:
        pool = _owned(session, RedirectPool, pool_id)
        return jsonify(stats.pool_stats(session, pool.id))


# -- campaigns -----------------------------------------------------------------------------------

CAMPAIGN_FIELDS = {"bot_id", "name", "text", "media_type", "media_url", "buttons", "audience"}


def _campaign_json(campaign: Campaign) -> dict:
    processed = campaign.sent + campaign.failed + campaign.skipped_blocked
    return {
        "id": campaign.id,
        "bot_id": campaign.bot_id,
        "name": campaign.name,
        "text": campaign.text,
        "media_type": campaign.media_type,
        "media_url": campaign.media_url,
        "buttons": campaign.buttons or [],
        "audience": campaign.audience,
        "status": campaign.status,
        "stop_requested": campaign.stop_requested,
        "progress": {
            "total": campaign.total,
            "processed": processed,
            "sent": campaign.sent,
            "failed": campaign.failed,
            "skipped_blocked": campaign.skipped_blocked,
            "percent": round(100 * processed / campaign.total, 1) if campaign.total else 0.0,
        },
        "created_at": _ts(campaign.created_at),
        "started_at": _ts(campaign.started_at),
        "finished_at": _ts(campaign.finished_at),
    }


def _buttons(value: Any) -> list[dict]:
    buttons = []
    for index, raw in enumerate(_list(value, "buttons", MAX_BUTTONS)):
        where = f"buttons[{index}]"
        item = _object(raw, where, {"text", "url"})
        if set(item) != {"text", "url"}:
            raise _bad(where, "needs text and url")
        text = _text(item["text"], f"{where}.text", max_len=64)
        url = _text(
            item["url"],
            f"{where}.url",
            max_len=2048,
            pattern=BUTTON_URL_RE,
            hint="must be an http(s) or tg:// link",
        )
        buttons.append({"text": text, "url": url})
    return buttons


@bp.get("/campaigns")
def list_campaigns():
    with get_db().read_session() as session:
        query = select(Campaign).where(Campaign.seller_id == g.seller_id)
        if "bot_id" in request.args:
            raw = request.args["bot_id"]
            if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_ID:
                raise ApiError(400, "bot_id: must be a positive integer")
            query = query.where(Campaign.bot_id == int(raw))
        return jsonify(_paged(session, query.order_by(Campaign.id.desc()), _campaign_json))


@bp.post("/campaigns")
def create_campaign():
    data = _body(CAMPAIGN_FIELDS, {"bot_id", "name"})
    name = _text(data["name"], "name", max_len=200)
    text = _text(data.get("text", ""), "text", max_len=MAX_TEXT, min_len=0)
    media_type, media_url = _media(data.get("media_type"), data.get("media_url"), "media")
    if not text and not media_type:
        raise _bad("text", "a campaign needs a text or a media")
    buttons = _buttons(data.get("buttons", []))
    audience = _choice(data.get("audience", "all"), "audience", AUDIENCES)

    def fn(session: Session) -> dict:
        bot = _owned(session, Bot, data["bot_id"], field="bot_id")
        campaign = Campaign(
            seller_id=g.seller_id,
            bot_id=bot.id,
            name=name,
            text=text,
            media_type=media_type,
            media_url=media_url,
            buttons=buttons,
            audience=audience,
            status="draft",
            stop_requested=False,
            cursor=0,
            total=0,
            sent=0,
            failed=0,
            skipped_blocked=0,
        )
        session.add(campaign)
        session.flush()
        return _campaign_json(campaign)

    return jsonify(_write(fn)), 201


@bp.get("/campaigns/<int:campaign_id>")
def get_campaign(campaign_id: int):
    # From the primary: progress must not lag behind a standby.
    with get_db().session() as session:
        return jsonify(_campaign_json(_owned(session, Campaign, campaign_id)))


@bp.post("/campaigns/<int:campaign_id>/start")
def start_campaign(campaign_id: int):
    """Start (or resume a stopped) campaign: its first batch goes to the `marathon` queue."""

    def fn(session: Session) -> tuple[bool, dict]:
        campaign = _owned(session, Campaign, campaign_id)
        previous = campaign.status
        started = campaign_jobs.start_campaign(session, campaign)
        return started, {"previous": previous, **_campaign_json(campaign)}

    started, body = _write(fn)
    if not started:
        raise ApiError(409, f"campaign is {body['status']}; only draft or stopped ones start")
    try:
        campaign_jobs.enqueue_batch(campaign_id)
    except Exception as exc:
        log.error(
            "could not enqueue campaign",
            extra={
                "campaign_id": campaign_id,
                "error_type": type(exc).__name__,
                "where": where(exc),
            },
        )

        def revert(session: Session) -> None:
            campaign = session.get(Campaign, campaign_id)
            if campaign is not None and campaign.status == "running":
                campaign.status = "stopped"

        get_db().transaction(revert)
        raise ApiError(503, "the job queue is unavailable; campaign not started") from None
    body.pop("previous")
    return jsonify(body), 202


@bp.post("/campaigns/<int:campaign_id>/stop")
def stop_campaign(campaign_id: int):
    """Ask a running campaign to stop: the next batch (or the next 50 sends) sees the flag."""

    def fn(session: Session) -> dict:
        campaign = _owned(session, Campaign, campaign_id)
        if campaign.status == "finished":
            raise ApiError(409, "campaign already finished")
        campaign.stop_requested = True
        if campaign.status == "draft":
            campaign.status = "stopped"
            campaign.finished_at = datetime.now(UTC)
        session.flush()
        return _campaign_json(campaign)

    body = _write(fn)
    if body["status"] == "running":
        # A campaign whose batch chain broke would never see the flag: give it a batch.
        with contextlib.suppress(Exception):
            campaign_jobs.ensure_chain(campaign_id)
    return jsonify(body), 202


@bp.post("/campaigns/<int:campaign_id>/resume")
def resume_campaign(campaign_id: int):
    """Resume a campaign: a stopped one starts again from its cursor; a running one whose batch
    chain broke (a lost job) gets its next batch. Idempotent: a batch in flight is not doubled."""
    with get_db().session() as session:
        status = _owned(session, Campaign, campaign_id).status
    if status in ("draft", "stopped"):
        return start_campaign(campaign_id)
    if status != "running":
        raise ApiError(409, f"campaign is {status}; only running or stopped ones resume")
    try:
        requeued = campaign_jobs.ensure_chain(campaign_id)
    except Exception:
        log.exception("could not enqueue campaign %s", campaign_id)
        raise ApiError(503, "the job queue is unavailable; retry") from None
    with get_db().session() as session:
        body = _campaign_json(_owned(session, Campaign, campaign_id))
    return jsonify({**body, "requeued": requeued}), 202
