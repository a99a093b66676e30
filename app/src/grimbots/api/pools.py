"""/api/pools: redirect pools, the tracking links (/go/<slug>) that spread clicks over bots."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from flask import g, jsonify
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from grimbots import stats
from grimbots.api.common import (
    CONFLICT,
    Id,
    Input,
    Page,
    bad,
    bp,
    change_owned,
    delete_owned,
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
from grimbots.models import Bot, PoolBot, RedirectPool
from grimbots.route_schemas import Deleted, Stats, optional

MAX_POOL_BOTS = 100
Slug = text(64, pattern=r"^[a-z0-9-]{3,64}$")
Strategy = Literal["round_robin", "weighted"]
TAKEN = "a pool with this slug already exists"


class PoolMember(Input):
    bot_id: Id
    weight: Annotated[int, Field(ge=1, le=1000)] = optional()


class PoolWrite(Input):
    slug: Slug = optional()
    strategy: Strategy = optional()
    bots: list[PoolMember] = optional(max_length=MAX_POOL_BOTS)


class PoolCreate(PoolWrite):
    slug: Slug


class PoolMemberOut(BaseModel):
    bot_id: int
    weight: int


class PoolOut(BaseModel):
    id: int
    slug: str
    strategy: str
    bots: list[PoolMemberOut]
    created_at: datetime | None


def pool_json(pool: RedirectPool) -> dict:
    return {
        "id": pool.id,
        "slug": pool.slug,
        "strategy": pool.strategy,
        "bots": [{"bot_id": m.bot_id, "weight": m.weight} for m in pool.members],
        "created_at": ts(pool.created_at),
    }


def _members(session: Session, pool: RedirectPool, members: list[PoolMember]) -> list[PoolBot]:
    wanted: dict[int, int] = {}
    for index, item in enumerate(members):
        field = f"bots[{index}].bot_id"
        bot = owned(session, Bot, item.bot_id, field=field)
        if bot.id in wanted:
            raise bad(field, f"bot {bot.id} is listed twice")
        wanted[bot.id] = item.weight if "weight" in item.model_fields_set else 1
    # Update in place, so a bot that stays in the pool keeps its row (unique pool+bot).
    rows = []
    for member in pool.members:
        if member.bot_id in wanted:
            member.weight = wanted.pop(member.bot_id)
            rows.append(member)
    return rows + [PoolBot(bot_id=bot_id, weight=weight) for bot_id, weight in wanted.items()]


def _apply(session: Session, pool: RedirectPool, data: PoolWrite) -> None:
    given = data.model_fields_set
    if "slug" in given:
        pool.slug = data.slug
    if "strategy" in given:
        pool.strategy = data.strategy
    if "bots" in given:
        pool.members = _members(session, pool, data.bots)


@bp.get("/pools")
@operation("List the seller's pools", (200, "a page", page_of(PoolOut)), query=Page)
def list_pools():
    page = query(Page)
    with get_db().read_session() as session:
        rows = (
            select(RedirectPool)
            .where(RedirectPool.seller_id == g.seller_id)
            .order_by(RedirectPool.id)
        )
        return jsonify(paged(session, rows, pool_json, page))


@bp.post("/pools")
@operation("Create a pool", (201, "created", PoolOut), body=PoolCreate, conflict=CONFLICT)
def create_pool():
    data = read_body(PoolCreate)

    def fn(session: Session) -> dict:
        pool = RedirectPool(seller_id=g.seller_id, strategy="round_robin")
        session.add(pool)
        _apply(session, pool, data)
        session.flush()
        return pool_json(pool)

    return jsonify(write(fn, TAKEN)), 201


@bp.get("/pools/<int:pool_id>")
@operation("One pool", (200, "pool", PoolOut), by_id=True)
def get_pool(pool_id: int):
    with get_db().session() as session:
        return jsonify(pool_json(owned(session, RedirectPool, pool_id)))


@bp.route("/pools/<int:pool_id>", methods=["PATCH", "PUT"])
@operation(
    "Change a pool",
    (200, "pool", PoolOut),
    by_id=True,
    conflict=CONFLICT,
    body=PoolWrite,
    operation_ids={"PUT": "replace_pool"},
    summaries={"PUT": "Change a pool (same as PATCH)"},
)
def update_pool(pool_id: int):
    data = read_body(PoolWrite)
    return jsonify(
        change_owned(
            RedirectPool,
            pool_id,
            lambda session, pool: _apply(session, pool, data),
            pool_json,
            TAKEN,
        )
    )


@bp.delete("/pools/<int:pool_id>")
@operation("Delete a pool", (200, "deleted", Deleted), by_id=True, conflict=CONFLICT)
def delete_pool(pool_id: int):
    return jsonify(delete_owned(RedirectPool, pool_id))


@bp.get("/pools/<int:pool_id>/stats")
@operation("The pool's clicks, leads, sales and revenue", (200, "stats", Stats), by_id=True)
def get_pool_stats(pool_id: int):
    with get_db().read_session() as session:
        pool = owned(session, RedirectPool, pool_id)
        return jsonify(stats.pool_stats(session, pool.id))
