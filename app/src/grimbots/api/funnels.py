"""/api/funnels: what a bot says and sells (welcome, offers, downsells, order bump)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from flask import g, jsonify
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from grimbots.api.common import (
    CONFLICT,
    MAX_TEXT,
    Id,
    Input,
    MediaType,
    Page,
    Price,
    bad,
    bp,
    change_owned,
    delete_owned,
    link,
    media,
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
from grimbots.models import Bot, Downsell, Funnel, Offer
from grimbots.route_schemas import Deleted, optional

MAX_OFFERS = MAX_DOWNSELLS = 10
Name = text(200)
Title = text(64)  # an offer's button text
Message = text(MAX_TEXT)
WelcomeText = text(MAX_TEXT, min_len=0)
MediaUrl = text(2048, min_len=0)
AccessLink = link(min_len=0)
Delay = Annotated[int, Field(ge=1, le=43200)]


class OfferWrite(Input):
    """An offer; with the id of an existing one it is updated and keeps its id."""

    id: Id = optional()
    title: Title
    price_cents: Price


class DownsellWrite(Input):
    id: Id = optional()
    delay_minutes: Delay
    price_cents: Price
    text: Message


class FunnelWrite(Input):
    name: Name = optional()
    welcome_text: WelcomeText = optional()
    welcome_media_type: MediaType | None = optional()
    welcome_media_url: MediaUrl | None = optional()
    access_link: AccessLink = optional()
    offers: list[OfferWrite] = optional(max_length=MAX_OFFERS)
    downsells: list[DownsellWrite] = optional(max_length=MAX_DOWNSELLS)
    order_bump_offer_id: Id | None = optional()


class FunnelCreate(FunnelWrite):
    name: Name


class OfferOut(BaseModel):
    id: int
    title: str
    price_cents: int


class DownsellOut(BaseModel):
    id: int
    delay_minutes: int
    price_cents: int
    text: str


class FunnelOut(BaseModel):
    id: int
    name: str
    welcome_text: str
    welcome_media_type: str | None
    welcome_media_url: str | None
    access_link: str
    order_bump_offer_id: int | None
    offers: list[OfferOut]
    downsells: list[DownsellOut]
    created_at: datetime | None


def funnel_json(funnel: Funnel) -> dict:
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
        "created_at": ts(funnel.created_at),
    }


def _rows(items: list[BaseModel], existing: list, field: str, model) -> list:
    """Existing rows updated in place (their ids stay valid in sent buttons), new ones added."""
    by_id = {row.id: row for row in existing}
    seen: set[int] = set()
    rows = []
    for position, item in enumerate(items):
        values = item.model_dump(exclude={"id"})
        row = None
        if "id" in item.model_fields_set:
            row = by_id.get(item.id)
            if row is None or item.id in seen:
                kind = "an offer" if field == "offers" else "a downsell"
                raise bad(f"{field}[{position}].id", f"not {kind} of this funnel: {item.id}")
            seen.add(item.id)
        row = row or model()
        for key, value in values.items():
            setattr(row, key, value)
        row.position = position
        rows.append(row)
    return rows


def _apply_welcome(funnel: Funnel, data: FunnelWrite) -> None:
    given = data.model_fields_set
    if "welcome_text" in given:
        funnel.welcome_text = data.welcome_text
    if "welcome_media_type" in given or "welcome_media_url" in given:
        media_type, media_url = funnel.welcome_media_type, funnel.welcome_media_url
        if "welcome_media_type" in given:
            media_type = data.welcome_media_type
            if media_type is None:  # removing the media drops its URL unless one is sent
                media_url = None
        if "welcome_media_url" in given:
            media_url = data.welcome_media_url
        funnel.welcome_media_type, funnel.welcome_media_url = media(
            media_type, media_url, "welcome_media"
        )
    if not funnel.welcome_text and not funnel.welcome_media_type:
        raise bad("welcome_text", "a welcome text or welcome media is required")


def _apply(session: Session, funnel: Funnel, data: FunnelWrite) -> None:
    given = data.model_fields_set
    if "name" in given:
        funnel.name = data.name
    if "access_link" in given:
        funnel.access_link = data.access_link
    _apply_welcome(funnel, data)
    if "offers" in given:
        funnel.offers = _rows(data.offers, list(funnel.offers), "offers", Offer)
    if "downsells" in given:
        funnel.downsells = _rows(data.downsells, list(funnel.downsells), "downsells", Downsell)
    session.flush()
    offer_ids = {offer.id for offer in funnel.offers}
    if "order_bump_offer_id" in given:
        bump = data.order_bump_offer_id
        if bump is not None and bump not in offer_ids:
            raise bad("order_bump_offer_id", "must be the id of one of this funnel's offers")
        funnel.order_bump_offer_id = bump
    elif funnel.order_bump_offer_id not in offer_ids:
        funnel.order_bump_offer_id = None  # its offer was removed


@bp.get("/funnels")
@operation("List the seller's funnels", (200, "a page", page_of(FunnelOut)), query=Page)
def list_funnels():
    page = query(Page)
    with get_db().read_session() as session:
        rows = select(Funnel).where(Funnel.seller_id == g.seller_id).order_by(Funnel.id)
        return jsonify(paged(session, rows, funnel_json, page))


@bp.post("/funnels")
@operation("Create a funnel", (201, "created", FunnelOut), body=FunnelCreate, conflict=CONFLICT)
def create_funnel():
    data = read_body(FunnelCreate)

    def fn(session: Session) -> dict:
        funnel = Funnel(seller_id=g.seller_id, welcome_text="", access_link="")
        session.add(funnel)
        _apply(session, funnel, data)
        session.flush()
        return funnel_json(funnel)

    return jsonify(write(fn)), 201


@bp.get("/funnels/<int:funnel_id>")
@operation("One funnel", (200, "funnel", FunnelOut), by_id=True)
def get_funnel(funnel_id: int):
    with get_db().session() as session:
        return jsonify(funnel_json(owned(session, Funnel, funnel_id)))


@bp.route("/funnels/<int:funnel_id>", methods=["PATCH", "PUT"])
@operation(
    "Change a funnel",
    (200, "funnel", FunnelOut),
    by_id=True,
    conflict=CONFLICT,
    body=FunnelWrite,
    operation_ids={"PUT": "replace_funnel"},
    summaries={"PUT": "Change a funnel (same as PATCH)"},
)
def update_funnel(funnel_id: int):
    data = read_body(FunnelWrite)
    return jsonify(
        change_owned(
            Funnel, funnel_id, lambda session, funnel: _apply(session, funnel, data), funnel_json
        )
    )


@bp.delete("/funnels/<int:funnel_id>")
@operation("Delete a funnel", (200, "deleted", Deleted), by_id=True, conflict=CONFLICT)
def delete_funnel(funnel_id: int) -> Any:
    """Delete a funnel; its bots keep running without one (funnel_id becomes null)."""
    return jsonify(delete_owned(Funnel, funnel_id, _detach_bots))


def _detach_bots(session: Session, funnel: Funnel) -> None:
    for bot in session.execute(select(Bot).where(Bot.funnel_id == funnel.id)).scalars():
        bot.funnel_id = None
