"""Tracking links: /go/<slug> records the ad click and sends the visitor into a bot.

The click's attribution goes to Redis under a random token for 24 h (the bot reads it back
when `/start <token>` arrives) and the click row is written by a tracking-queue worker, so the
redirect itself does no database write.
"""

from __future__ import annotations

import logging
import random
import re
import secrets

from flask import Blueprint, current_app, redirect, request
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from grimbots import job_contract
from grimbots.cleantext import clean
from grimbots.db import get_db
from grimbots.errors import ApiError
from grimbots.funnel import ATTRIBUTION_FIELDS, ATTRIBUTION_LIMITS, tracking_key
from grimbots.models import PoolBot, RedirectPool
from grimbots.openapi import Answer, describe
from grimbots.queues import TRACKING, get_queue
from grimbots.redis_pool import state
from grimbots.route_schemas import Click, Error

log = logging.getLogger(__name__)
bp = Blueprint("tracking", __name__)
SLUG = re.compile(r"^[a-z0-9-]{3,64}$")
# Each stored text field and its column's length (models.Click).
FIELD_LIMITS = ATTRIBUTION_LIMITS | {"ip": 45, "user_agent": 500}


def clean_click(fields: dict) -> dict:
    """The click's text fields as the clicks table can hold them: no NUL or other control
    character (PostgreSQL's text refuses NUL), cut to the column's length, empty as None.
    Query values are already decoded by werkzeug (bad UTF-8 escapes become U+FFFD)."""
    return {name: clean(fields.get(name), limit) for name, limit in FIELD_LIMITS.items()}


def pick_bot(pool: RedirectPool, members: list[PoolBot]) -> PoolBot:
    """Round-robin through Redis (shared by every worker and node) or weighted at random."""
    if pool.strategy == "weighted":
        return random.choices(members, weights=[max(m.weight, 0) or 1 for m in members])[0]
    try:
        turn = state().incr(f"gb:pool:{pool.id}:rr")
    except RedisError:
        turn = random.randrange(len(members))
    return members[turn % len(members)]


@bp.get("/go/<slug>")
@describe(
    "Record an ad click and send the visitor to one of the pool's bots",
    tags=["tracking"],
    query=Click,
    responses={
        302: "to https://t.me/<bot>?start=<token>",
        404: Answer("unknown link", Error),
        503: Answer("no bot of the pool is available", Error),
    },
    operation_ids={"GET": "tracking_redirect"},
)
def go(slug: str):
    if not SLUG.match(slug):
        raise ApiError(404, "unknown link")
    with get_db().read_session() as session:
        pool = session.scalar(
            select(RedirectPool)
            .where(RedirectPool.slug == slug)
            .options(selectinload(RedirectPool.members).selectinload(PoolBot.bot))
        )
        if pool is None:
            raise ApiError(404, "unknown link")
        # Bots that are off, down or banned are skipped.
        members = [m for m in pool.members if m.bot.active and m.bot.status == "ok"]
        if not members:
            raise ApiError(503, "no bot available for this link")
        chosen = pick_bot(pool, members)
        username, bot_id = chosen.bot.username, chosen.bot.id

    token = secrets.token_hex(16)
    click = clean_click(
        {field: request.args.get(field) for field in ATTRIBUTION_FIELDS}
        | {
            # The client address after the trusted-proxy rewrite (proxies.py): X-Forwarded-For
            # from anyone else is ignored.
            "ip": request.remote_addr,
            "user_agent": request.user_agent.string,
        }
    )
    click |= {"pool_id": pool.id, "bot_id": bot_id, "token": token}
    ttl = current_app.config["GRIMBOTS_SETTINGS"].tracking_ttl
    try:
        pipe = state().pipeline(transaction=False)
        pipe.hset(tracking_key(token), mapping={k: v for k, v in click.items() if v is not None})
        pipe.expire(tracking_key(token), ttl)
        pipe.execute()
        job = job_contract.check("grimbots.jobs.record_click", (click,))
        get_queue(TRACKING).enqueue(job, click, result_ttl=0)
    except RedisError:
        # A paid visitor is worth more than the attribution: still send them to the bot.
        log.warning("redis unreachable at /go; redirecting without tracking", extra={"slug": slug})
        return redirect(f"https://t.me/{username}", code=302)
    return redirect(f"https://t.me/{username}?start={token}", code=302)
