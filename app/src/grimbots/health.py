"""/health: database, Redis and RQ checks; 200 when all are ok, 503 otherwise. /health/ready:
whether this node can take its traffic now, for the load balancer.

Anyone may ask (load balancers, uptime checks): they get the status, each check's ok flag, the
database backend and the queues' depth and worker counts. The detail an operator needs to find
a fault (error messages, which carry host names and ports; pool sizes; timings; Redis modes) is
shown only to a caller on loopback (the host itself, `curl 127.0.0.1:5000/health`) or one that
sends `Authorization: Bearer <GRIMBOTS_HEALTH_TOKEN>`. "Loopback" is the client address after
the trusted-proxy rewrite, so a request relayed by a local proxy is not mistaken for one.

HAProxy checks /health/ready, not /health: a fault every node shares must not take every node
out of rotation at once. It pings only the Redis servers the intake uses (the bot cache, the
queue), through small pools with a 0.5 s timeout, and tells nobody more than each check's ok flag
and error class. A queue primary this node cannot reach while a Sentinel sees it down too is
the primary's fault, shared by every node: the node stays ready (`shared`), its intake tries the
new primary inside the request and answers 503 itself until there is one.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import time
from importlib import metadata

from flask import Blueprint, current_app, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy import text

from grimbots import queues
from grimbots.auth import bearer_token
from grimbots.db import get_db
from grimbots.openapi import Answer, describe
from grimbots.redis_pool import get_pools
from grimbots.route_schemas import Health

bp = Blueprint("health", __name__)

# The release this process runs (the wheel's version): an operator or a rolling update's test sees
# each node change release. Shown with the detail only (loopback or the health token).
VERSION = metadata.version("grimbots")

# What an anonymous caller sees of each check, besides ok.
PUBLIC_FIELDS = {"database": ("backend",), "redis": (), "rq": ("queues",)}


def _timed(check):
    started = time.perf_counter()
    try:
        detail = check() or {}
        result = {"ok": True, **detail}
    except Exception as exc:  # noqa: BLE001 - any failure makes the check fail, never a 500
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        result["error_type"] = type(exc).__name__
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _database():
    db = get_db()
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"backend": db.engine.dialect.name, "pool_in_use": db.pool_in_use()}


def _redis():
    pools = get_pools()
    pools.state().ping()
    pools.queue().ping()
    return {
        "mode": pools.settings.redis_mode,
        "queue_mode": pools.settings.queue_redis_mode,
        "pools": [vars(s) for s in pools.stats()],
    }


def _rq():
    overview = queues.queue_overview()
    idle = [name for name, info in overview.items() if info["workers"] == 0]
    if idle:
        raise RuntimeError(f"no worker listens to: {', '.join(idle)}")
    return {"queues": overview}


def may_see_detail() -> bool:
    """True on loopback or with the health token."""
    try:
        if ipaddress.ip_address(request.remote_addr or "").is_loopback:
            return True
    except ValueError:
        pass
    expected = current_app.config["GRIMBOTS_SETTINGS"].health_token
    given = bearer_token(request)
    return bool(expected and given) and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode()
    )


def _public(name: str, check: dict) -> dict:
    out = {"ok": check["ok"]}
    if not check["ok"]:
        # The class of the failure, not its message: messages name hosts and ports.
        out["error"] = check.get("error_type", "unavailable")
    for field in PUBLIC_FIELDS[name]:
        if field in check:
            out[field] = check[field]
    return out


@bp.get("/health")
@describe(
    "Database, Redis and RQ checks",
    description=(
        "Anyone gets the status and each check's ok flag; error messages, pools and timings only "
        "from loopback or with Authorization: Bearer <GRIMBOTS_HEALTH_TOKEN>."
    ),
    tags=["operations"],
    responses={200: Answer("healthy", Health), 503: Answer("a check failed", Health)},
)
def health():
    checks = {"database": _timed(_database), "redis": _timed(_redis), "rq": _timed(_rq)}
    ok = all(check["ok"] for check in checks.values())
    if not checks["rq"]["ok"] and checks["redis"]["ok"]:
        # Still show the queues when workers are missing: that is what the operator needs.
        with contextlib.suppress(Exception):
            checks["rq"]["queues"] = queues.queue_overview()
    detail = {}
    if may_see_detail():
        for check in checks.values():
            check.pop("error_type", None)
        detail["version"] = VERSION
    else:
        checks = {name: _public(name, check) for name, check in checks.items()}
    return jsonify(status="ok" if ok else "fail", checks=checks, **detail), 200 if ok else 503


def _ping_state() -> None:
    get_pools().probe().state().ping()


def _ping_queue() -> None:
    get_pools().probe().queue().ping()


# Sentinel's flags for a primary it sees down or is replacing.
_PRIMARY_DOWN_FLAGS = {"s_down", "o_down", "failover_in_progress"}


def _sentinels_see_primary_down() -> bool:
    """True when the first Sentinel that answers sees the queue primary down (or is replacing
    it): the fault is the primary's, not this node's. False without Sentinel."""
    pools = get_pools().probe()
    if pools.settings.queue_redis_mode != "sentinel":
        return False
    for sentinel in pools.queue().connection_pool.sentinel_manager.sentinels:
        try:
            state = sentinel.sentinel_master(pools.settings.sentinel_master, return_responses=True)
        except RedisError:
            continue
        flags = state["flags"]
        flags = set(flags.split(",")) if isinstance(flags, str) else set(flags)
        return bool(flags & _PRIMARY_DOWN_FLAGS)
    return False


@bp.get("/health/ready")
@describe(
    "Readiness for the load balancer: can this node take webhooks now",
    description=(
        "Pings the Redis servers the webhook intake uses (the state Redis holding the bot cache, "
        "the queue Redis), never the database or the workers. A queue primary a Sentinel sees "
        "down too is a fault every node shares: `shared`, and still 200 (the intake answers 503 "
        "itself until the new primary). Each check's ok flag and error class only."
    ),
    tags=["operations"],
    responses={200: Answer("ready", Health), 503: Answer("an intake Redis is unreachable", Health)},
)
def ready():
    checks = {"state_redis": _timed(_ping_state), "queue_redis": _timed(_ping_queue)}
    checks = {
        name: {"ok": True} if check["ok"] else {"ok": False, "error": check["error_type"]}
        for name, check in checks.items()
    }
    queue = checks["queue_redis"]
    if not queue["ok"] and _sentinels_see_primary_down():
        queue["shared"] = True
    ok = all(check["ok"] or check.get("shared") for check in checks.values())
    return jsonify(status="ok" if ok else "fail", checks=checks), 200 if ok else 503
