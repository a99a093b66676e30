"""Phase 1 Redis: connected clients stay under the configured bound while webhooks pour in."""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import http

from grimbots_lab import APP_ENV_FILES

REQUESTS = 400
THREADS = 16

# Runs on the host: the password comes from the env file into REDISCLI_AUTH (never argv).
REDIS = (
    f'REDISCLI_AUTH="$(sed -n "s/^GRIMBOTS_REDIS_PASSWORD=//p" {APP_ENV_FILES[0]})" '
    "redis-cli --no-raw"
)
# Bounded sampler: 150 samples, 0.1 s apart.
SAMPLER = (
    f"for i in $(seq 150); do {REDIS} info clients | grep '^connected_clients:'; sleep 0.1; done"
)


def _info(host, section: str) -> dict[str, str]:
    out = host.check_output(f"{REDIS} info {section}")
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def _text_update(update_id: int) -> dict:
    chat = random.randint(10**9, 2 * 10**9)
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": chat, "type": "private"},
            "from": {"id": chat, "is_bot": False, "first_name": "Load"},
            "text": "oi",
        },
    }


def test_redis_clients_stay_under_the_bound_during_a_webhook_burst(
    app_host, app_vars, app_url, demo_bot
):
    workers = sum(int(w["count"]) for w in app_vars["grimbots_workers"])
    bound = (
        (int(app_vars["grimbots_web_workers"]) + 2 * workers)
        * 2
        * int(app_vars["grimbots_redis_max_connections"])
    )
    maxclients = int(app_vars["grimbots_redis_maxclients"])
    assert _info(app_host, "server")  # Redis answers with the password from the env file
    rejected_before = int(_info(app_host, "stats")["rejected_connections"])

    samples: list[int] = []

    def sample():
        out = app_host.check_output(SAMPLER)
        samples.extend(int(line.split(":")[1]) for line in out.splitlines())

    sampler = threading.Thread(target=sample)
    sampler.start()
    url = f"{app_url}/webhook/telegram/{demo_bot['bot_id']}"
    headers = {"X-Telegram-Bot-Api-Secret-Token": demo_bot["webhook_secret"]}
    base = random.randint(10**6, 10**9)
    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        statuses = list(
            pool.map(
                lambda i: http("POST", url, _text_update(base + i), headers)[0], range(REQUESTS)
            )
        )
    elapsed = time.monotonic() - started
    sampler.join(timeout=60)

    print(
        f"\nredis bound: {REQUESTS} webhooks in {elapsed:.1f} s ({REQUESTS / elapsed:.0f} req/s), "
        f"connected_clients max {max(samples)} (pool bound {bound}, maxclients {maxclients})"
    )
    assert statuses.count(200) == REQUESTS, {s: statuses.count(s) for s in set(statuses)}
    assert samples and max(samples) <= min(bound, maxclients)
    assert int(_info(app_host, "stats")["rejected_connections"]) == rejected_before
