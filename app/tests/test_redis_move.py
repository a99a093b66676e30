"""The move from the phase-2 Redis to phase 3's Redis Cluster (state) and queue Redis: every key
goes where the app looks for it, with its time to live; queued and scheduled work runs once on
the new Redis; a second run does nothing; a busy source is refused."""

from __future__ import annotations

import shutil
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import StartedJobRegistry

from grimbots import db as db_module
from grimbots import redis_move, redis_pool, telegram, webhook
from grimbots.queues import QUEUE_NAMES
from tests.conftest import REDIS_URL, make_settings
from tests.factories import (
    callback_update,
    make_bot,
    make_funnel,
    make_pool,
    make_seller,
    start_update,
)
from tests.redis_servers import free_port, redis_server

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is installed by scripts/services.sh"
)
HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest.fixture
def queue_redis(tmp_path):
    port = free_port()
    proc = redis_server(tmp_path, port)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def _use(settings) -> None:
    """Point this process at other Redis servers, as a restart with a new environment does."""
    webhook.forget_local_bot_meta()
    redis_pool.reset_pools()
    telegram.reset_client()
    redis_pool.get_pools(settings)
    telegram.get_client(settings)


def _journey(client, db, chat: int) -> str:
    """A click, a /start with its token, an offer tapped: leaves a tracking token, dedup locks,
    a pending charge and its downsells scheduled minutes ahead. Returns the tracking token."""
    with db.session() as session:
        seller, _ = make_seller(session)
        funnel = make_funnel(session, seller)
        bot = make_bot(session, seller, funnel)
        pool = make_pool(session, seller, [(bot, 1)])
        offer = funnel.offers[0].id
    token = parse_qs(urlsplit(client.get(f"/go/{pool.slug}").headers["Location"]).query)["start"][0]
    headers = {HEADER: bot.webhook_secret}
    for update in (start_update(chat, token), callback_update(chat, f"buy:{offer}")):
        assert (
            client.post(f"/webhook/telegram/{bot.id}", json=update, headers=headers).status_code
            == 200
        )
    return token, bot


def test_every_key_the_app_writes_lives_where_the_move_puts_it(
    client, db, drain, settings, queue_redis, database_url, fake_tg
):
    split = make_settings(
        database_url,
        fake_tg.base_url,
        GRIMBOTS_QUEUE_REDIS_URL=f"redis://127.0.0.1:{queue_redis}/0",
    )
    _use(split)
    _journey(client, db, 8101)
    drain()
    state_keys = [k for k in redis.Redis.from_url(REDIS_URL).scan_iter() if k.startswith(b"gb:")]
    queue_keys = list(redis.Redis(port=queue_redis).scan_iter())
    assert any(k.startswith(b"gb:track:") for k in state_keys), state_keys
    assert any(k.startswith(b"rq:scheduled:") for k in queue_keys)
    misplaced = [k for k in state_keys if redis_move.is_queue_key(k.decode())]
    misplaced += [k for k in queue_keys if not redis_move.is_queue_key(k.decode())]
    assert misplaced == []


def test_the_move_keeps_queued_and_scheduled_work_and_ttls_and_runs_once(
    client, db, drain, settings, redis_cluster, queue_redis, database_url, fake_tg
):
    token, bot = _journey(client, db, 8201)
    drain()  # the welcome and the charge; the downsells stay scheduled minutes ahead
    waiting = start_update(8202)  # accepted, not yet processed when the app stops
    assert (
        client.post(
            f"/webhook/telegram/{bot.id}", json=waiting, headers={HEADER: bot.webhook_secret}
        ).status_code
        == 200
    )
    source = redis.Redis.from_url(REDIS_URL)
    track_ttl = source.pttl(f"gb:track:{token}")
    assert track_ttl > 0

    moved = make_settings(
        database_url,
        fake_tg.base_url,
        GRIMBOTS_REDIS_MODE="cluster",
        GRIMBOTS_REDIS_CLUSTER_NODES=",".join(f"127.0.0.1:{p}" for p in redis_cluster),
        GRIMBOTS_QUEUE_REDIS_URL=f"redis://127.0.0.1:{queue_redis}/0",
    )
    _use(moved)
    pools = redis_pool.get_pools()
    report = redis_move.move(source, pools.state(), pools.queue())
    assert report.state_keys > 0 and report.queue_keys > 0
    assert report.jobs_waiting["webhook"] == 1
    # The chain's first downsell, minutes ahead (the second is scheduled when the first runs).
    assert report.jobs_scheduled["tasks"] == 1
    ttl = pools.state().pttl(f"gb:track:{token}")
    assert 0 < ttl <= track_ttl

    again = redis_move.move(source, pools.state(), pools.queue())
    assert again.already_done and again.state_keys == again.queue_keys == 0

    # The old Redis is gone for the app: everything now runs from the new ones.
    source.flushdb()
    drain(include_scheduled=True)
    assert len(fake_tg.sent(method="sendPhoto", chat_id=8202)) == 1  # the waiting /start
    texts = [c["params"]["text"] for c in fake_tg.sent(method="sendMessage", chat_id=8201)]
    assert [sum(f"Desconto {i}" in t for t in texts) for i in (1, 2)] == [1, 1]
    assert len(fake_tg.sent(method="sendPhoto", chat_id=8201)) == 1  # no welcome again
    db_module.get_db()  # the database is untouched by the move


def test_a_source_with_a_live_worker_or_a_started_job_is_refused(settings, queue_redis):
    source = redis.Redis.from_url(REDIS_URL)
    dest = redis.Redis(port=queue_redis)
    worker = Worker([Queue(QUEUE_NAMES[0], connection=source)], connection=source, name="old-1")
    worker.register_birth()
    with pytest.raises(redis_move.SourceBusy, match="worker"):
        redis_move.move(source, dest, dest)
    worker.register_death()
    job = Job.create("grimbots.jobs.process_update", args=(1, {}), connection=source, id="j-1")
    job.save()
    # What a worker writes when it starts a job (RQ 2 keys an execution as <job>:<execution>).
    started = StartedJobRegistry(QUEUE_NAMES[0], connection=source)
    source.zadd(started.key, {"j-1:e-1": time.time() + 600})
    with pytest.raises(redis_move.SourceBusy, match="started"):
        redis_move.move(source, dest, dest)
    assert not dest.exists(redis_move.MOVED_MARKER)


def test_move_redis_check_says_whether_the_old_redis_is_quiet_and_moves_nothing(
    settings, queue_redis
):
    from click.testing import CliRunner

    from grimbots.cli import main

    source = redis.Redis.from_url(REDIS_URL)
    worker = Worker([Queue(QUEUE_NAMES[0], connection=source)], connection=source, name="old-2")
    worker.register_birth()
    env = {
        "GRIMBOTS_REDIS_URL": REDIS_URL,
        "GRIMBOTS_QUEUE_REDIS_URL": f"redis://127.0.0.1:{queue_redis}/0",
    }
    busy = CliRunner().invoke(main, ["move-redis", "--from", REDIS_URL, "--check"], env=env)
    assert busy.exit_code == 3 and "1 worker(s) alive" in busy.output, busy.output
    worker.register_death()
    quiet = CliRunner().invoke(main, ["move-redis", "--from", REDIS_URL, "--check"], env=env)
    assert quiet.exit_code == 0 and quiet.output.strip() == "quiet", quiet.output
    assert not redis.Redis(port=queue_redis).exists(redis_move.MOVED_MARKER)
