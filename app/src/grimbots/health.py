"""/health: database, Redis and RQ checks; 200 when all are ok, 503 otherwise."""

from __future__ import annotations

import contextlib
import time

from flask import Blueprint, jsonify
from sqlalchemy import text

from grimbots import queues
from grimbots.db import get_db
from grimbots.redis_pool import get_pools

bp = Blueprint("health", __name__)


def _timed(check):
    started = time.perf_counter()
    try:
        detail = check() or {}
        result = {"ok": True, **detail}
    except Exception as exc:  # noqa: BLE001 - any failure makes the check fail, never a 500
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
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


@bp.get("/health")
def health():
    checks = {"database": _timed(_database), "redis": _timed(_redis), "rq": _timed(_rq)}
    ok = all(check["ok"] for check in checks.values())
    if not checks["rq"]["ok"] and checks["redis"]["ok"]:
        # Still show the queues when workers are missing: that is what the operator needs.
        with contextlib.suppress(Exception):
            checks["rq"]["queues"] = queues.queue_overview()
    return jsonify(status="ok" if ok else "fail", checks=checks), 200 if ok else 503
