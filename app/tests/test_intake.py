"""The intake is all or nothing: an update is locked and queued in one step, or not touched.

Faults are injected around the one Lua call (Redis error before it, reply lost after it, a
real TCP connection cut between the two), and against a real replica that stops acknowledging
(`WAIT`). After each, Telegram's repeat of the update must end in exactly one processed update
and one welcome.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from grimbots import db as db_module
from grimbots import failover, intake, redis_pool, webhook
from grimbots.models import InboundUpdate
from tests.conftest import make_settings
from tests.factories import make_bot, make_funnel, make_seller, start_update
from tests.redis_servers import free_port, redis_server, wait

HEADER = "X-Telegram-Bot-Api-Secret-Token"


needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is installed by scripts/services.sh"
)


@pytest.fixture
def bot(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        return make_bot(session, seller, make_funnel(session, seller))


def post(client, bot, update):
    return client.post(
        f"/webhook/telegram/{bot.id}", json=update, headers={HEADER: bot.webhook_secret}
    )


def welcomes(fake_tg, chat_id: int) -> int:
    return len(fake_tg.sent(method="sendPhoto", chat_id=chat_id))


def job_key(bot, update) -> str:
    return f"rq:job:{intake.job_id_for(bot.id, update['update_id'])}"


def queued_ids(conn) -> list[bytes]:
    return conn.lrange("rq:queue:webhook", 0, -1)


def _fail_intake_call(monkeypatch, when: str) -> list[int]:
    """Make the next call of the intake script fail once, before or after it ran, with the
    request's own retries (failover.py, tested in test_intake_failover.py) off: what follows when
    a fault outlasts them."""
    monkeypatch.setattr(failover, "PAUSES", ())
    real = redis.Redis.execute_command
    calls = [0]

    def execute_command(self, *args, **options):
        # The intake script only: the bot-meta cache fill is a script too.
        if calls[0] == 0 and args[:2] == ("EVALSHA", intake.current_script()[1]):
            calls[0] += 1
            if when == "before":
                raise redis.ConnectionError("connection refused (injected)")
            real(self, *args, **options)
            raise redis.ConnectionError("reply lost (injected)")
        return real(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", execute_command)
    return calls


def test_redis_error_before_the_script_leaves_nothing_and_the_repeat_is_processed(
    client, bot, fake_tg, drain, monkeypatch
):
    update = start_update(7101)
    calls = _fail_intake_call(monkeypatch, "before")
    assert post(client, bot, update).status_code == 503
    assert calls == [1]
    conn = redis_pool.queue_connection()
    assert not conn.exists(job_key(bot, update)) and queued_ids(conn) == []
    repeat = post(client, bot, update)
    assert repeat.status_code == 200 and repeat.json == {"ok": True}
    drain()
    assert welcomes(fake_tg, 7101) == 1


def test_reply_lost_after_the_script_answers_503_and_the_repeat_is_a_duplicate_processed_once(
    client, bot, fake_tg, drain, monkeypatch, db
):
    update = start_update(7102)
    calls = _fail_intake_call(monkeypatch, "after")
    assert post(client, bot, update).status_code == 503
    assert calls == [1]
    conn = redis_pool.queue_connection()
    # The script ran whole: the job is queued together with its lock.
    assert conn.exists(job_key(bot, update)) and len(queued_ids(conn)) == 1
    repeat = post(client, bot, update)
    assert repeat.status_code == 200 and repeat.json["duplicate"] == "update_id"
    assert len(queued_ids(conn)) == 1
    drain()
    assert welcomes(fake_tg, 7102) == 1
    with db.session() as session:
        assert session.query(InboundUpdate).filter_by(bot_id=bot.id).count() == 1


def test_a_twin_of_a_queued_update_is_a_duplicate_after_its_lock_expired(client, bot, drain):
    """While the job exists (queued, retrying, failed), the job itself is the lock."""
    update = start_update(7103)
    assert post(client, bot, update).json == {"ok": True}
    redis_pool.queue_connection().delete(f"gb:{{bot:{bot.id}}}:upd:{update['update_id']}")
    assert post(client, bot, update).json["duplicate"] == "update_id"
    assert len(queued_ids(redis_pool.queue_connection())) == 1


def test_concurrent_deliveries_queue_exactly_one_job(app, bot):
    update = start_update(7104)
    barrier, answers = threading.Barrier(16), []

    def deliver():
        client = app.test_client()
        barrier.wait()
        answers.append(post(client, bot, update).json)

    threads = [threading.Thread(target=deliver) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [a for a in answers if a == {"ok": True}] == [{"ok": True}]
    assert queued_ids(redis_pool.queue_connection()) == [
        intake.job_id_for(bot.id, update["update_id"]).encode()
    ]


def test_the_queued_job_is_rqs_own_and_carries_no_user_text(client, bot):
    from rq.job import Job

    update = start_update(7105, "secret-payload")
    assert post(client, bot, update).json == {"ok": True}
    job = Job.fetch(
        intake.job_id_for(bot.id, update["update_id"]), connection=redis_pool.queue_connection()
    )
    assert job.func_name == "grimbots.jobs.process_update"
    assert job.args == (bot.id, update)
    assert job.origin == "webhook" and job.get_status() == "queued"
    assert job.retries_left == 5 and job.result_ttl == 0
    assert "secret-payload" not in job.description


# Fields of RQ's job hash that depend on the moment of the write: compared by format only.
TIMESTAMP_FIELDS = ("created_at", "enqueued_at")
RQ_TIMESTAMP = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_the_intake_writes_the_job_hash_rqs_own_enqueue_writes(settings):
    """Field for field and value for value: an RQ upgrade that changes its hash fails here."""
    from rq import Queue

    from grimbots.queues import DEFAULT_RETRY

    conn = redis_pool.queue_connection()
    update = {"update_id": 7, "message": {"text": "hi"}}
    job_id = intake.job_id_for(3, 7)
    assert intake.take(3, update, [("update", "gb:test:intake-lock", 20)]) is None
    ours = conn.hgetall(f"rq:job:{job_id}")
    conn.delete(f"rq:job:{job_id}", "rq:queue:webhook")
    Queue("webhook", connection=conn).enqueue(
        intake.JOB_FUNC,
        3,
        update,
        job_id=job_id,
        result_ttl=0,
        failure_ttl=intake.FAILURE_TTL,
        retry=DEFAULT_RETRY,
        description="process_update(bot=3, update=7)",
        job_timeout=settings.job_timeout,
    )
    rqs = conn.hgetall(f"rq:job:{job_id}")
    assert sorted(ours) == sorted(rqs)
    for field in TIMESTAMP_FIELDS:
        assert RQ_TIMESTAMP.match(ours.pop(field.encode())), field
        assert RQ_TIMESTAMP.match(rqs.pop(field.encode())), field
    assert ours == rqs


def test_script_is_loaded_again_after_the_server_forgot_it(client, bot, fake_tg, drain):
    redis_pool.queue_connection().script_flush()
    assert post(client, bot, start_update(7106)).json == {"ok": True}
    drain()
    assert welcomes(fake_tg, 7106) == 1


# -- a real connection cut after the request reached Redis ------------------------------------


class ReplyDroppingProxy:
    """TCP proxy to Redis that cuts the connection instead of passing on the reply to the
    first request carrying `marker`: the command ran, the client never hears of it."""

    def __init__(self, port: int, upstream: tuple[str, int], marker: bytes = b"EVALSHA"):
        self.upstream, self.marker = upstream, marker
        self.armed = threading.Event()
        self.armed.set()
        self.dropped = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    def start(self) -> None:
        self._threads[0].start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._pump, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        waiting_reply_to_drop = False
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([client, server], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if self.marker in data and self.armed.is_set():
                            self.armed.clear()
                            waiting_reply_to_drop = True
                        server.sendall(data)
                    elif waiting_reply_to_drop:
                        self.dropped += 1
                        return
                    else:
                        client.sendall(data)
        finally:
            client.close()
            server.close()


@pytest.fixture
def proxied_app(database_url, redis_client, fake_tg):
    """The app with its queue Redis reached through a ReplyDroppingProxy."""
    from grimbots import telegram
    from grimbots.app import create_app

    db_index = redis_client.connection_pool.connection_kwargs.get("db", 0)
    proxy = ReplyDroppingProxy(0, ("127.0.0.1", 6379))
    proxy.start()
    settings = make_settings(
        database_url,
        fake_tg.base_url,
        GRIMBOTS_QUEUE_REDIS_URL=f"redis://127.0.0.1:{proxy.port}/{db_index}",
    )
    webhook.forget_local_bot_meta()
    db_module.reset_db()
    redis_pool.reset_pools()
    telegram.reset_client()
    db_module.get_db(settings)
    redis_pool.get_pools(settings)
    telegram.get_client(settings)
    app = create_app(settings)
    app.testing = True
    try:
        yield app, proxy
    finally:
        db_module.reset_db()
        redis_pool.reset_pools()
        telegram.reset_client()
        proxy.stop()


@pytest.mark.parametrize("client_retries", [0, 2])
def test_reply_lost_on_the_wire_never_drops_the_update(
    proxied_app, fake_tg, client_retries, monkeypatch
):
    """Without client retries the answer is 503 and Telegram's repeat is a duplicate; with
    them (as Redis Cluster clients do) the retry finds its own lock and job and answers 200.
    Either way the update is queued once and processed once. (The request's own retries,
    failover.py, are off here: test_intake_failover.py has them on the same wire.)"""
    from grimbots.worker import drain_queues

    monkeypatch.setattr(failover, "PAUSES", ())
    app, proxy = proxied_app
    conn = redis_pool.queue_connection()
    conn.connection_pool.connection_kwargs["retry"] = Retry(NoBackoff(), client_retries)
    with db_module.get_db().session() as session:
        seller, _ = make_seller(session)
        bot = make_bot(session, seller, make_funnel(session, seller))
    client = app.test_client()
    update = start_update(7110 + client_retries)
    first = post(client, bot, update)
    assert proxy.dropped == 1
    if client_retries:
        assert first.status_code == 200 and first.json["duplicate"] == "update_id"
    else:
        assert first.status_code == 503
        repeat = post(client, bot, update)
        assert repeat.status_code == 200 and repeat.json["duplicate"] == "update_id"
    assert len(queued_ids(conn)) == 1
    drain_queues()
    assert welcomes(fake_tg, 7110 + client_retries) == 1


# -- WAIT against a real replica -----------------------------------------------------------------


@pytest.fixture
def primary_and_replica(tmp_path):
    """((primary process, port), (replica process, port)): a queue Redis with one replica."""
    primary_port, replica_port = free_port(), free_port()
    primary = redis_server(tmp_path, primary_port)
    replica = redis_server(tmp_path, replica_port, "--replicaof", "127.0.0.1", str(primary_port))
    try:
        wait(
            lambda: (
                redis.Redis(port=primary_port).info("replication")["slave0"]["state"] == "online"
            ),
            what="the replica to be in sync",
        )
        yield (primary, primary_port), (replica, replica_port)
    finally:
        for proc in (replica, primary):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process does not see SIGTERM
                proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def replicated_app(database_url, redis_client, fake_tg, primary_and_replica):
    from grimbots import telegram
    from grimbots.app import create_app

    settings = make_settings(
        database_url,
        fake_tg.base_url,
        GRIMBOTS_QUEUE_REDIS_URL=f"redis://127.0.0.1:{primary_and_replica[0][1]}/0",
        GRIMBOTS_QUEUE_MIN_REPLICAS="1",
        # Long enough for a loaded machine; a stopped replica still never answers within it.
        GRIMBOTS_QUEUE_WAIT_TIMEOUT_MS="1500",
    )
    webhook.forget_local_bot_meta()
    db_module.reset_db()
    redis_pool.reset_pools()
    telegram.reset_client()
    db_module.get_db(settings)
    redis_pool.get_pools(settings)
    telegram.get_client(settings)
    app = create_app(settings)
    app.testing = True
    try:
        yield app, primary_and_replica[1]
    finally:
        db_module.reset_db()
        redis_pool.reset_pools()
        telegram.reset_client()


@needs_redis_server
def test_update_is_answered_200_only_once_a_replica_holds_it(replicated_app, fake_tg):
    from grimbots.worker import drain_queues

    app, (replica, replica_port) = replicated_app
    with db_module.get_db().session() as session:
        seller, _ = make_seller(session)
        bot = make_bot(session, seller, make_funnel(session, seller))
    client = app.test_client()
    on_replica = redis.Redis(port=replica_port)

    accepted = start_update(7120)
    assert post(client, bot, accepted).json == {"ok": True}
    assert on_replica.exists(job_key(bot, accepted))  # WAIT returned: the replica has it

    stalled = start_update(7121)
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        answer = post(client, bot, stalled)
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert answer.status_code == 503

    wait(lambda: on_replica.exists(job_key(bot, stalled)), what="the replica to catch up")
    repeat = post(client, bot, stalled)
    assert repeat.status_code == 200 and repeat.json["duplicate"] == "update_id"
    drain_queues()
    assert welcomes(fake_tg, 7120) == 1 and welcomes(fake_tg, 7121) == 1


# -- a job a dying worker took with it -----------------------------------------------------------


def test_a_queued_job_lost_by_a_dead_worker_is_requeued_once_and_processed(
    client, bot, fake_tg, drain
):
    conn = redis_pool.queue_connection()
    update = start_update(7130)
    assert post(client, bot, update).json == {"ok": True}
    job_id = intake.job_id_for(bot.id, update["update_id"])
    conn.lrem("rq:queue:webhook", 0, job_id)  # popped by a worker that died at once
    # Telegram got 200 and will not repeat it; a repeat would be a duplicate anyway.
    assert post(client, bot, update).json["duplicate"] == "update_id"

    assert intake.requeue_lost(grace=0, confirm=0) == {"checked": 1, "requeued": 0}  # seen once
    assert queued_ids(conn) == []
    assert intake.requeue_lost(grace=0, confirm=0) == {"checked": 1, "requeued": 1}
    assert intake.requeue_lost(grace=0, confirm=0)["requeued"] == 0  # in its queue again
    assert queued_ids(conn) == [job_id.encode()]
    drain()
    assert welcomes(fake_tg, 7130) == 1


def test_a_job_left_in_rqs_intermediate_list_by_a_dead_worker_is_requeued_once_and_processed(
    client, bot, fake_tg, drain
):
    from rq import Queue, SimpleWorker
    from rq.utils import now

    conn = redis_pool.queue_connection()
    update = start_update(7135)
    assert post(client, bot, update).json == {"ok": True}
    job_id = intake.job_id_for(bot.id, update["update_id"])
    queue = Queue("webhook", connection=conn)
    moving = queue.intermediate_queue
    # Popped (moved into the intermediate list) by a worker that died before registering it as
    # started; RQ's own cleanup noticed it long ago and may fail and retry it any moment.
    assert conn.lmove("rq:queue:webhook", moving.key) == job_id.encode()
    conn.set(moving.get_first_seen_key(job_id), now().timestamp() - 3600)

    assert intake.requeue_lost(grace=0, confirm=0)["requeued"] == 0  # seen once
    conn.set(queue.registry_cleaning_key, 1)  # RQ's cleanup is running: not now
    assert intake.requeue_lost(grace=0, confirm=0)["requeued"] == 0
    conn.delete(queue.registry_cleaning_key)
    assert intake.requeue_lost(grace=0, confirm=0)["requeued"] == 1
    assert intake.requeue_lost(grace=0, confirm=0)["requeued"] == 0  # in its queue again
    # RQ's cleanup of the intermediate list (a worker's maintenance) finds nothing left to retry.
    moving.cleanup(SimpleWorker([queue], connection=conn), queue)
    assert queued_ids(conn) == [job_id.encode()] and moving.get_job_ids() == []
    assert queue.scheduled_job_registry.get_job_ids() == []  # no retry of it on the way
    assert queue.fetch_job(job_id).get_status() == "queued"
    drain()
    assert welcomes(fake_tg, 7135) == 1


def test_jobs_in_their_queue_started_or_young_are_left_alone(client, bot):
    from rq.registry import StartedJobRegistry

    conn = redis_pool.queue_connection()
    queued, started, young = start_update(7131), start_update(7132), start_update(7133)
    for update in (queued, started, young):
        assert post(client, bot, update).json == {"ok": True}
    started_id = intake.job_id_for(bot.id, started["update_id"])
    conn.lrem("rq:queue:webhook", 0, started_id)
    conn.zadd(StartedJobRegistry("webhook", connection=conn).key, {f"{started_id}:exec1": 1})
    conn.lrem("rq:queue:webhook", 0, intake.job_id_for(bot.id, young["update_id"]))
    for _ in range(2):
        # The young one was enqueued less than the grace time ago: maybe just being popped.
        assert intake.requeue_lost(grace=3600, confirm=0)["requeued"] == 0
        assert intake.requeue_lost(grace=0, confirm=3600)["requeued"] == 0
    assert intake.requeue_lost(grace=0, confirm=0)["requeued"] == 1  # only the young one
    ids = queued_ids(conn)
    assert started_id.encode() not in ids and len(ids) == 2


def test_a_lost_job_behind_a_backlog_larger_than_the_limit_is_requeued(client, bot, fake_tg):
    conn = redis_pool.queue_connection()
    limit = 5
    for i in range(4 * limit):  # failed jobs kept a week count toward the bound as well
        conn.hset(f"rq:job:tg-{bot.id}-9{i}", mapping={"status": "failed"})
    for _ in range(4 * limit):
        assert post(client, bot, start_update(7140)).status_code == 200
    # The lost job is the one a scan from the start reaches last.
    order = [k.decode() for k in conn.scan_iter(match="rq:job:tg-*", count=500)]
    queued = {i.decode() for i in queued_ids(conn)}
    lost = [key[len("rq:job:") :] for key in order if key[len("rq:job:") :] in queued][-1]
    conn.lrem("rq:queue:webhook", 0, lost)

    passes = [intake.requeue_lost(grace=0, confirm=0, limit=limit) for _ in range(12)]
    assert all(p["checked"] <= 2 * limit for p in passes)  # bounded, yet every job seen
    assert sum(p["requeued"] for p in passes) == 1
    assert queued_ids(conn).count(lost.encode()) == 1
