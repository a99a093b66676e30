"""What every resource of the admin API shares: the blueprint, input validation against the
pydantic schemas, tenancy lookups, transactional writes, pagination and the common answers.

A schema's failure is a 400 naming the field (`{"ok": false, "error": "offers[0].title: ...",
"field": "offers[0].title"}`), or listing the unknown or missing top-level fields (`fields`).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from flask import Blueprint, g, request
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic import create_model as _create_model
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grimbots import jsonbody
from grimbots.db import get_db
from grimbots.errors import ApiError, where
from grimbots.openapi import Answer, describe
from grimbots.route_schemas import Error

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

M = TypeVar("M", bound=BaseModel)

MAX_ID = 2**31 - 1
MAX_PRICE_CENTS = 10_000_000  # R$ 100.000,00
MAX_TEXT = 4096  # Telegram's message limit (captions over 1,024 go as a separate message)
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
URL_RE = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)
BUTTON_URL_RE = re.compile(r"(https?|tg)://[^\s]+", re.IGNORECASE)
# A Telegram file_id, as an alternative to a media URL.
FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{10,200}")
CONFLICTS = "conflicts with an existing object"


# -- schema building blocks ----------------------------------------------------------------------


class Input(BaseModel):
    """A request body or query: strict types (true is no integer, "1" no number), no unknown
    field."""

    model_config = ConfigDict(strict=True, extra="forbid")


def _no_nul(value: str) -> str:
    # PostgreSQL refuses NUL in text: a 400 here rather than a 500 at the insert.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def text(max_len: int, min_len: int = 1, pattern: str | None = None) -> Any:
    """A string type: its length (and pattern) in the schema, no NUL characters."""
    return Annotated[
        str, Field(min_length=min_len, max_length=max_len, pattern=pattern), AfterValidator(_no_nul)
    ]


def _link(value: str) -> str:
    if value and not BUTTON_URL_RE.fullmatch(value):
        raise ValueError("must be an http(s) or tg:// link")
    return value


def link(min_len: int = 1) -> Any:
    """An http(s) or tg:// link (empty when min_len is 0)."""
    return Annotated[text(2048, min_len), AfterValidator(_link)]


Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Price = Annotated[int, Field(ge=1, le=MAX_PRICE_CENTS)]
MediaType = Literal["photo", "video"]


def _query_int(value: Any) -> Any:
    """A query string's integer: ASCII digits only (isdigit() alone takes "²" and "٣", int()
    takes " 1" and "1_0")."""
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise ValueError("must be an integer")
        return int(value)
    return value


QueryInt = Annotated[int, BeforeValidator(_query_int)]


class Query(BaseModel):
    """A query string: the names declared are checked, any other is ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Page(Query):
    limit: QueryInt = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    offset: QueryInt = Field(0, ge=0, le=MAX_ID)


@cache
def page_of(model: type[BaseModel]) -> type[BaseModel]:
    """The schema of a page of model's objects."""
    return _create_model(
        f"{model.__name__}Page",
        items=(list[model], ...),
        total=(int, ...),
        limit=(int, ...),
        offset=(int, ...),
    )


# -- validation ----------------------------------------------------------------------------------


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
    return out


def invalid(exc: ValidationError) -> ApiError:
    """The 400 for a schema's failure: the unknown fields, the missing ones, or the first bad
    one (its message never quotes the input)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    for kind, label in (("extra_forbidden", "unknown"), ("missing", "missing")):
        top = sorted({str(e["loc"][0]) for e in errors if e["type"] == kind and len(e["loc"]) == 1})
        if top:
            return ApiError(400, f"{label} field(s): {', '.join(top)}", fields=top)
    first = errors[0]
    field = _dotted(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return ApiError(400, f"{field}: {message}", field=field) if field else ApiError(400, message)


def body(model: type[M]) -> M:
    """The request's JSON body checked by jsonbody (depth, Unicode, 64-bit integers), then by
    the model."""
    try:
        data = jsonbody.loads(request.get_data(cache=True))
    except jsonbody.BadJson as exc:
        raise ApiError(400, str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


def query(model: type[M]) -> M:
    """The query string checked by the model (a repeated name counts once: the first)."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise invalid(exc) from None


def bad(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}", field=field)


# -- tenancy, writes, pages ----------------------------------------------------------------------


def owned(session: Session, model, obj_id: int, *, field: str | None = None):
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
            raise bad(field, f"{name} {obj_id} not found")
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


def write(fn: Callable[[Session], Any], conflict: str = CONFLICTS):
    """Run fn in a transaction (retried on failover, never applied twice); unique violations
    answer 409."""
    try:
        return get_db().transaction(fn, key=_idempotency_key())
    except IntegrityError as exc:
        # The database's text quotes the conflicting values (a username, a token): not logged.
        log.info("api write conflict", extra={"error_type": type(exc.orig).__name__})
        raise ApiError(409, conflict) from None


def change_owned(
    model,
    obj_id: int,
    change: Callable[[Session, Any], None],
    serialize: Callable[[Any], dict],
    conflict: str = CONFLICTS,
) -> dict:
    """Change the seller's object in one transaction (see write); its JSON after the change.

    What every update (PATCH/PUT) and every soft delete does: look it up (404 for anyone
    else's), change it, flush so a conflict surfaces here as a 409, serialize it.
    """

    def fn(session: Session) -> dict:
        obj = owned(session, model, obj_id)
        change(session, obj)
        session.flush()
        return serialize(obj)

    return write(fn, conflict)


def delete_owned(model, obj_id: int, before: Callable[[Session, Any], None] | None = None) -> dict:
    """Delete the seller's object in one transaction, after `before` (which detaches what must
    outlive it); the answer every delete gives."""

    def fn(session: Session) -> None:
        obj = owned(session, model, obj_id)
        if before is not None:
            before(session, obj)
        session.delete(obj)

    write(fn)
    return {"ok": True, "id": obj_id, "deleted": True}


def paged(session: Session, select_query, serialize: Callable[[Any], dict], page: Page) -> dict:
    total = session.execute(select(func.count()).select_from(select_query.subquery())).scalar_one()
    rows = session.execute(select_query.limit(page.limit).offset(page.offset)).scalars().all()
    return {
        "items": [serialize(row) for row in rows],
        "total": total,
        "limit": page.limit,
        "offset": page.offset,
    }


def ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def media(media_type: str | None, media_url: str | None, prefix: str):
    """A media type and its URL (or Telegram file_id), checked together."""
    if media_type is None:
        if media_url not in (None, ""):
            raise bad(f"{prefix}_url", f"needs {prefix}_type photo or video")
        return None, None
    if not media_url:
        raise bad(f"{prefix}_url", "must not be empty")
    if not (URL_RE.fullmatch(media_url) or FILE_ID_RE.fullmatch(media_url)):
        raise bad(f"{prefix}_url", "must be an http(s) URL or a Telegram file_id")
    return media_type, media_url


def invalidate_bot_cache(bot_id: int) -> None:
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


# -- descriptions --------------------------------------------------------------------------------

INVALID = Answer("invalid input; the message names the field", Error)
UNAUTHORIZED = Answer("missing or invalid bearer token", Error)
UNAVAILABLE = Answer("the database or Redis is unavailable; try again", Error)
NOT_FOUND = Answer("not this seller's, or no such id", Error)
CONFLICT = Answer("conflicts with an existing object", Error)


def operation(
    summary: str,
    ok: tuple[int, str, type[BaseModel]],
    *,
    by_id: bool = False,
    conflict: Answer | None = None,
    unavailable: Answer = UNAVAILABLE,
    **details: Any,
) -> Callable[[Callable], Callable]:
    """describe() for an admin API view: its success, and the errors every view may answer."""
    status, description, schema = ok
    responses = {status: Answer(description, schema), 400: INVALID, 401: UNAUTHORIZED}
    responses[503] = unavailable
    if by_id:
        responses[404] = NOT_FOUND
    if conflict is not None:
        responses[409] = conflict
    return describe(
        summary, tags=["admin API"], responses=responses, security="sellerToken", **details
    )
