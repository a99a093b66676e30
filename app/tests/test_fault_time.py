"""The fault suite's "time passes" step does what live workers do meanwhile: a killed worker's
job runs again (its liveness threads reap it in 15-25 s), so a scenario never leaves it for the
final recovery while minutes of scenario time pass (seed 20261130 index 139: a PIX code whose
job died with its worker, never sent before the lead paid 600 s later, then cancelled). And
recovery waits for an update's job a killed worker popped into no list (the same scenario, now
and then: its /start's welcome never sent), which the intake reconciler puts back. And every
minute of scenario time the reconcilers run once, as the workers run them in production."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from faults.driver import ScenarioRun
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

from grimbots import jobs, liveness, queues
from grimbots.models import OutboundMessage, utcnow
from tests.factories import callback_update, make_bot, make_funnel, make_seller, start_update


class _NoFaults:
    fired: dict = {}  # noqa: RUF012 - read-only here

    def disarm(self) -> None:
        pass


def _bare_run(redis_client) -> ScenarioRun:
    """A scenario run with only what `_later` uses: the test's Redis, no lane database."""
    run = object.__new__(ScenarioRun)
    run.r = redis_client
    run.rq = queues.queue_connection()
    run.redis_faults = _NoFaults()
    run.commit_loss = SimpleNamespace(fired=0, disarm=lambda: None)
    run.lane = SimpleNamespace(shift_time=lambda backend, seconds: None)
    run.s = SimpleNamespace(backend="sqlite")
    run.notes, run.hold_ends, run.worker_crashes = [], [], 0
    return run


def _job_of_a_killed_worker(conn, name: str) -> Job:
    """A job a worker took and was SIGKILLed in: started, its worker's last beat still live."""
    queue = Queue(queues.GATEWAY, connection=conn)
    job = queue.enqueue("tests.slow_jobs.record", "killed", retry=queues.DEFAULT_RETRY)
    worker = SimpleWorker([queue], connection=conn, name=name)
    worker.register_birth()
    liveness.announce(conn, name)
    queue.dequeue_any([queue], None, connection=conn)
    worker.prepare_execution(job)
    return job


def test_a_killed_workers_job_runs_again_while_scenario_time_passes(settings, redis_client):
    conn = queues.queue_connection()
    job = _job_of_a_killed_worker(conn, "killed-worker")

    _bare_run(redis_client)._later(300)

    assert redis_client.get("slow_jobs:killed:runs") == "1"
    assert Job.fetch(job.id, connection=conn).get_status() == JobStatus.FINISHED
    assert Queue(queues.GATEWAY, connection=conn).started_job_registry.count == 0


def test_a_live_workers_job_is_left_alone_when_little_time_passes(settings, redis_client):
    conn = queues.queue_connection()
    job = _job_of_a_killed_worker(conn, "busy-worker")

    _bare_run(redis_client)._later(5)  # under the alive key's TTL: the worker may still run it

    assert redis_client.get("slow_jobs:killed:runs") is None
    assert job.id in Queue(queues.GATEWAY, connection=conn).started_job_registry.get_job_ids()


def test_recovery_waits_while_an_accepted_updates_job_is_lost(settings, redis_client):
    """A worker killed between popping an intake job and starting it: the job is in no list,
    and only the intake reconciler, a minute later in real time, puts it back."""
    conn = queues.queue_connection()
    queue = Queue(queues.WEBHOOK, connection=conn)
    queue.enqueue("tests.slow_jobs.record", "update", job_id="tg-1-149002")
    run = _bare_run(redis_client)
    run.updates, run.payment_posts, run.campaigns, run.pay_wanted = [], {}, [], set()
    assert not run._quiet()  # queued

    conn.lpop(queue.key)  # the killed worker's BLPOP took it

    assert not run._quiet()
    conn.rpush(queue.key, "tg-1-149002")  # what intake.requeue_lost does
    SimpleWorker([queue], connection=conn).work(burst=True)
    assert run._quiet()


def test_a_send_left_pending_goes_out_when_a_minute_of_scenario_time_has_passed(
    settings, redis_client, fake_tg, db
):
    """A send whose job gave up while Telegram was away stays `pending` in the outbox; in
    production the outbox reconciler, run by the workers every minute, sends it then. The
    harness's minutes must do the same, once per minute of its clock, however it is cut."""
    with db.session() as session:
        seller, _ = make_seller(session)
        bot = make_bot(session, seller, make_funnel(session, seller))
        session.add(
            OutboundMessage(
                bot_id=bot.id,
                chat_id=5401,
                idempotency_key="parked-send",
                method="sendMessage",
                payload={"chat_id": 5401, "text": "finish me"},
                status="pending",
                claimed_at=None,
                attempts=3,
                created_at=utcnow() - timedelta(minutes=5),
            )
        )
    run = _bare_run(redis_client)

    run._later(30)
    assert fake_tg.sent(chat_id=5401) == []  # half a minute: no reconciler pass yet

    run._later(30)
    assert [c["params"]["text"] for c in fake_tg.sent(chat_id=5401)] == ["finish me"]
    assert run.reconciler_passes == 1

    run._later(300)
    assert len(fake_tg.sent(chat_id=5401)) == 1  # sent once, however many passes follow
    assert run.reconciler_passes == 6


def test_the_customer_pays_only_a_charge_whose_pix_code_reached_them(
    settings, redis_client, fake_tg, db, drain
):
    """A customer cannot pay a PIX code they never got. The harness paid any charge, so under
    a long 429 hold a lead paid before its code went out, the outbox reconciler then cancelled
    the code as no longer due, and the scenario reported it lost (seed 20261130 index 0)."""
    with db.session() as session:
        seller, _ = make_seller(session)
        shop = make_funnel(session, seller)
        bot = make_bot(session, seller, shop)
        offer = shop.offers[0].id
    jobs.process_update(bot.id, start_update(5501))
    jobs.process_update(bot.id, callback_update(5501, f"buy:{offer}"))
    drain()
    run = _bare_run(redis_client)
    run.hdb, run.chats, run.payment_posts = db, {0: 5501}, {}
    run.bots, run.s.bot_of = [SimpleNamespace(bot_id=bot.id, token=bot.token)], lambda lead: 0

    run.fake = SimpleNamespace(sent=lambda token, chat_id: [])  # its PIX code not sent yet
    assert run._payable(0) is None

    run.fake = fake_tg  # Telegram delivered it
    assert run._payable(0) is not None
