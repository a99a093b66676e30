"""CPU cost of one webhook request, in process: the app's work without Gunicorn, wrk or the network.

Useful when the machine is shared and wrk figures are noisy: CPU time per request changes little
with load, and the cProfile listing shows where it goes. Compares the real webhook with the
trivial Flask endpoint of bench/trivial_app.py, both through Flask's test client, one thread.

usage: .venv/bin/python bench/profile_webhook.py [requests] [--profile]
Needs the local Redis (127.0.0.1:6379); uses DB $BENCH_REDIS_DB (default 5), flushed before and
after, and a temporary SQLite database.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _update(n: int, kind: str) -> bytes:
    user = {"id": n, "is_bot": False, "first_name": "Lead"}
    chat = {"id": n, "type": "private"}
    if kind == "callback":
        update = {
            "update_id": n,
            "callback_query": {
                "id": str(n),
                "from": user,
                "message": {"message_id": 1, "chat": chat, "date": 0},
                "chat_instance": str(n),
                "data": "buy:1",
            },
        }
    else:
        text = f"/start {n:032d}" if kind == "start" else f"quanto custa? {n}"
        update = {
            "update_id": n,
            "message": {"message_id": 1, "date": 0, "chat": chat, "from": user, "text": text},
        }
    return json.dumps(update).encode()


KINDS = [
    "start",
    "text",
    "start",
    "callback",
    "start",
    "text",
    "start",
    "callback",
    "start",
    "text",
]


def _run(client, path: str, headers: dict, count: int, base: int) -> tuple[float, float]:
    """(wall ms, CPU ms) per request over `count` requests, each a new update."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        body = _update(base + i, KINDS[i % 10])
        response = client.post(path, data=body, headers=headers)
        if response.status_code != 200 or b"duplicate" in response.data:
            raise SystemExit(f"{path}: unexpected answer {response.status_code} {response.data!r}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return 1000 * wall / count, 1000 * cpu / count


def main() -> int:
    count = int(next((a for a in sys.argv[1:] if a.isdigit()), "3000"))
    profile = "--profile" in sys.argv
    db = os.environ.get("BENCH_REDIS_DB", "5")
    tmp = tempfile.mkdtemp(prefix="grimbots-profile.")
    os.environ.update(
        GRIMBOTS_DATABASE_URL=f"sqlite:///{tmp}/bench.db",
        GRIMBOTS_REDIS_URL=f"redis://127.0.0.1:6379/{db}",
        GRIMBOTS_QUEUE_REDIS_URL=f"redis://127.0.0.1:6379/{db}",
        GRIMBOTS_LOG_LEVEL="WARNING",
        GRIMBOTS_DEMO_WEBHOOK_SECRET="profile-secret",
    )
    import redis

    from grimbots.app import create_app
    from grimbots.db import get_db
    from grimbots.migrations_runner import upgrade
    from grimbots.seed import seed_demo
    from grimbots.settings import Settings

    raw = redis.Redis.from_url(os.environ["GRIMBOTS_REDIS_URL"])
    raw.flushdb()
    try:
        settings = Settings.from_env()
        upgrade(settings.database_url)
        seed = seed_demo(get_db(settings))
        app = create_app(settings)
        sys.path.insert(0, str(HERE))
        from trivial_app import app as trivial

        path = f"/webhook/telegram/{seed['bot_id']}"
        headers = {
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": seed["webhook_secret"],
        }
        real, bare = app.test_client(), trivial.test_client()
        _run(real, path, headers, 200, 10**9)  # warm-up: imports, bot meta cache, script load
        _run(bare, path, headers, 200, 0)
        t_wall, t_cpu = _run(bare, path, headers, count, 0)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        w_wall, w_cpu = _run(real, path, headers, count, 2 * 10**9)
        if profiler:
            profiler.disable()
        print(f"{count} requests each, one thread, Flask test client (no HTTP server)")
        print(f"trivial: {t_wall:.3f} ms wall, {t_cpu:.3f} ms CPU per request")
        print(f"webhook: {w_wall:.3f} ms wall, {w_cpu:.3f} ms CPU per request")
        print(
            f"webhook / trivial: {w_cpu / t_cpu:.1f}x the CPU; "
            f"ceiling on one core for the app's own work: {1000 / w_cpu:.0f} req/s"
        )
        if profiler:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
            stats.print_stats(45)
            print(out.getvalue())
    finally:
        raw.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
