"""/health, /metrics and JSON errors."""

from __future__ import annotations

from rq import Queue, Worker

from grimbots import redis_pool
from grimbots.queues import QUEUE_NAMES
from tests.factories import make_bot, make_seller, start_update


def _register_workers():
    conn = redis_pool.queue_connection()
    workers = []
    for name in ("tasks", "gateway", "webhook"):
        queues = [
            Queue(q, connection=conn)
            for q in (("tasks", "tracking", "marathon") if name == "tasks" else (name,))
        ]
        worker = Worker(queues, connection=conn, name=f"test-{name}")
        worker.register_birth()
        workers.append(worker)
    return workers


def test_health_is_503_and_names_the_queues_without_workers(client):
    resp = client.get("/health")
    assert resp.status_code == 503
    checks = resp.json["checks"]
    assert checks["database"]["ok"] and checks["redis"]["ok"]
    assert checks["rq"]["ok"] is False and "tasks" in checks["rq"]["error"]
    assert set(checks["rq"]["queues"]) == set(QUEUE_NAMES)


def test_health_is_200_when_every_queue_has_a_worker(client):
    workers = _register_workers()
    try:
        resp = client.get("/health")
        assert resp.status_code == 200, resp.json
        body = resp.json
        assert body["status"] == "ok"
        assert body["checks"]["rq"]["queues"]["tracking"]["workers"] == 1
        pools = {p["name"]: p for p in body["checks"]["redis"]["pools"]}
        assert pools["state"]["max_connections"] == 50
    finally:
        for worker in workers:
            worker.register_death()


def test_health_is_503_when_redis_is_down(client, monkeypatch):
    import redis

    def broken(self):
        raise redis.ConnectionError("down")

    monkeypatch.setattr(redis_pool.RedisPools, "state", broken)
    resp = client.get("/health")
    assert resp.status_code == 503
    assert resp.json["checks"]["redis"]["ok"] is False


def test_metrics_expose_the_platform_counters(client, db):
    with db.session() as session:
        seller, _ = make_seller(session)
        bot = make_bot(session, seller)
    headers = {"X-Telegram-Bot-Api-Secret-Token": bot.webhook_secret}
    update = start_update(6001)
    client.post(f"/webhook/telegram/{bot.id}", json=update, headers=headers)
    client.post(f"/webhook/telegram/{bot.id}", json=update, headers=headers)
    body = client.get("/metrics").get_data(as_text=True)
    for name in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "telegram_messages_received_total",
        "telegram_messages_sent_total",
        "telegram_errors_total",
        "update_processing_seconds",
        "db_pool_in_use",
        "rq_queue_depth",
        "rq_workers",
        "redis_pool_in_use",
    ):
        assert name in body, name
    assert 'duplicates_suppressed_total{layer="update_id"}' in body
    assert 'rq_queue_depth{queue="webhook"}' in body


def test_unknown_routes_and_methods_answer_json(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.is_json
    wrong = client.get("/webhook/telegram/1")
    assert wrong.status_code == 405 and wrong.is_json
