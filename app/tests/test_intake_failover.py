"""The intake rides out a failover of its Redis inside the request (failover.py): it tries the
new primary within FAILOVER_BUDGET before answering 503, and a retry never queues an update
twice (the intake's write is all or nothing; a lost reply leaves the job and its lock)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from grimbots import db as db_module
from grimbots import failover, intake, redis_pool, webhook
from tests import test_intake
from tests.conftest import make_settings
from tests.factories import make_bot, make_funnel, make_seller, start_update
from tests.redis_servers import free_port, redis_server
from tests.test_intake import needs_redis_server, post, queued_ids, welcomes

# The intake tests' fixtures: a bot with a funnel, the app behind a reply-dropping proxy.
bot = test_intake.bot
proxied_app = test_intake.proxied_app


def _failing(monkeypatch, command: str, times: int, *, after: bool = False) -> list[int]:
    """The next `times` calls of `command` fail as a lost primary does: refused before they
    reach Redis, or (`after`) with the reply lost once Redis ran them. Returns the call count."""
    real = redis.Redis.execute_command
    calls = [0]

    def targeted(args: tuple) -> bool:
        if command == "EVALSHA":  # the intake script only: the bot-meta cache fill is one too
            return args[:2] == ("EVALSHA", intake.current_script()[1])
        return args[0] == command

    def execute_command(self, *args, **options):
        if not targeted(args):
            return real(self, *args, **options)
        calls[0] += 1
        if calls[0] > times:
            return real(self, *args, **options)
        if after:
            real(self, *args, **options)
            raise redis.ConnectionError("reply lost (injected)")
        raise redis.ConnectionError("connection refused (injected)")

    monkeypatch.setattr(redis.Redis, "execute_command", execute_command)
    return calls


def test_a_lost_queue_primary_is_tried_again_and_the_update_queued_once(
    client, bot, fake_tg, drain, monkeypatch
):
    update = start_update(7201)
    calls = _failing(monkeypatch, "EVALSHA", 2)
    answer = post(client, bot, update)
    assert answer.status_code == 200 and answer.json == {"ok": True}
    assert calls == [3]
    conn = redis_pool.queue_connection()
    assert queued_ids(conn) == [intake.job_id_for(bot.id, update["update_id"]).encode()]
    drain()
    assert welcomes(fake_tg, 7201) == 1


def test_a_retry_after_a_lost_reply_finds_its_own_job_and_queues_nothing_twice(
    client, bot, fake_tg, drain, monkeypatch
):
    update = start_update(7202)
    calls = _failing(monkeypatch, "EVALSHA", 1, after=True)
    answer = post(client, bot, update)
    assert answer.status_code == 200 and answer.json["duplicate"] == "update_id"
    assert calls == [2]
    assert len(queued_ids(redis_pool.queue_connection())) == 1
    drain()
    assert welcomes(fake_tg, 7202) == 1


def test_a_lost_state_redis_node_is_tried_again_for_the_bot_lookup(client, bot, monkeypatch):
    calls = _failing(monkeypatch, "HGETALL", 2)
    answer = post(client, bot, start_update(7203))
    assert answer.status_code == 200 and answer.json == {"ok": True}
    assert calls == [3]


def test_a_primary_that_stays_away_answers_503_within_the_budget(client, bot, monkeypatch):
    calls = _failing(monkeypatch, "EVALSHA", 1000)
    started = time.monotonic()
    answer = post(client, bot, start_update(7204))
    took = time.monotonic() - started
    assert answer.status_code == 503
    # Bounded attempts, and no pause started past the budget.
    assert 2 <= calls[0] <= len(failover.PAUSES) + 1
    assert took <= failover.FAILOVER_BUDGET + 0.5, took
    assert queued_ids(redis_pool.queue_connection()) == []


def test_an_error_no_failover_causes_is_not_retried(client, bot, monkeypatch):
    real = redis.Redis.execute_command
    calls = [0]

    def execute_command(self, *args, **options):
        if args[:2] == ("EVALSHA", intake.current_script()[1]):
            calls[0] += 1
            raise redis.ResponseError("ERR something the script did (injected)")
        return real(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", execute_command)
    assert post(client, bot, start_update(7205)).status_code == 503
    assert calls == [1]


def test_a_reply_cut_on_the_wire_is_retried_in_the_request_and_queued_once(proxied_app, fake_tg):
    """A real TCP connection cut after Redis ran the script, redis-py's own retries off."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from grimbots.worker import drain_queues

    app, proxy = proxied_app
    conn = redis_pool.queue_connection()
    conn.connection_pool.connection_kwargs["retry"] = Retry(NoBackoff(), 0)
    with db_module.get_db().session() as session:
        seller, _ = make_seller(session)
        owner = make_bot(session, seller, make_funnel(session, seller))
    answer = post(app.test_client(), owner, start_update(7206))
    assert proxy.dropped == 1
    assert answer.status_code == 200 and answer.json["duplicate"] == "update_id"
    assert len(queued_ids(conn)) == 1
    drain_queues()
    assert welcomes(fake_tg, 7206) == 1


@pytest.fixture
def restartable_queue(database_url, redis_client, fake_tg, tmp_path):
    """The app with its queue Redis on a server of its own: (app, port, a restart function)."""
    from grimbots import telegram
    from grimbots.app import create_app

    port = free_port()
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    servers = [redis_server(tmp_path / "first", port)]
    settings = make_settings(
        database_url, fake_tg.base_url, GRIMBOTS_QUEUE_REDIS_URL=f"redis://127.0.0.1:{port}/0"
    )
    webhook.forget_local_bot_meta()
    for reset in (db_module.reset_db, redis_pool.reset_pools, telegram.reset_client):
        reset()
    db_module.get_db(settings)
    redis_pool.get_pools(settings)
    telegram.get_client(settings)
    app = create_app(settings)
    app.testing = True

    def restart_after(seconds: float) -> threading.Thread:
        servers[0].kill()
        servers[0].wait(timeout=10)

        def start() -> None:
            time.sleep(seconds)
            servers.append(redis_server(tmp_path / "second", port))

        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        return thread

    try:
        yield app, restart_after
    finally:
        for reset in (db_module.reset_db, redis_pool.reset_pools, telegram.reset_client):
            reset()
        for server in servers:
            server.kill()
            server.wait(timeout=10)


@needs_redis_server
def test_an_update_sent_while_the_queue_redis_is_replaced_is_taken_by_the_new_one(
    restartable_queue, fake_tg
):
    from grimbots.worker import drain_queues

    app, restart_after = restartable_queue
    with db_module.get_db().session() as session:
        seller, _ = make_seller(session)
        owner = make_bot(session, seller, make_funnel(session, seller))
    client = app.test_client()
    assert post(client, owner, start_update(7207)).json == {"ok": True}
    drain_queues()
    thread = restart_after(0.5)  # the pool's connections now lead to a dead server
    update = start_update(7208)
    answer = post(client, owner, update)
    thread.join(timeout=15)
    assert answer.status_code == 200 and answer.json == {"ok": True}
    conn = redis_pool.queue_connection()
    assert queued_ids(conn) == [intake.job_id_for(owner.id, update["update_id"]).encode()]
    drain_queues()
    assert welcomes(fake_tg, 7207) == 1 and welcomes(fake_tg, 7208) == 1
