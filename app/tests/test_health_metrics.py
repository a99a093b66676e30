"""/health, /metrics and JSON errors."""

from __future__ import annotations

from importlib import metadata

from rq import Queue, Worker

from grimbots import redis_pool
from grimbots.queues import QUEUE_NAMES
from tests.factories import make_bot, make_seller, message_update, start_update


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
        "grimbots_http_requests_total",
        "grimbots_http_request_duration_seconds_bucket",
        "grimbots_telegram_updates_received_total",
        "grimbots_telegram_messages_sent_total",
        "grimbots_telegram_errors_total",
        "grimbots_update_processing_seconds",
        "grimbots_db_pool_connections_in_use",
        "grimbots_rq_queue_jobs",
        "grimbots_rq_workers",
        "grimbots_redis_pool_connections_in_use",
    ):
        assert name in body, name
    assert 'grimbots_duplicates_suppressed_total{layer="update_id"}' in body
    assert 'grimbots_rq_queue_jobs{queue="webhook"}' in body


def test_every_app_metric_is_in_the_grimbots_namespace_with_its_unit(client, db):
    """One namespace, so no name collides with an exporter's (redis_, rq_, pg_, node_ ...)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = client.get("/metrics").get_data(as_text=True)
    # python_ and process_: the client library's own collectors, the same in every exporter.
    families = [
        f
        for f in text_string_to_metric_families(body)
        if not f.name.startswith(("python_", "process_"))
    ]
    assert len(families) > 10
    for family in families:
        assert family.name.startswith("grimbots_"), family.name
        if family.type == "counter":  # the parser strips _total; the samples carry it
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name


def test_unknown_routes_and_methods_answer_json(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.is_json
    wrong = client.get("/webhook/telegram/1")
    assert wrong.status_code == 405 and wrong.is_json


def test_an_anonymous_caller_gets_the_status_without_internal_detail(client, monkeypatch):
    import redis

    def broken(self):
        raise redis.ConnectionError("Error 111 connecting to 10.0.0.7:6379. Connection refused.")

    monkeypatch.setattr(redis_pool.RedisPools, "state", broken)
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    resp = client.get("/health", environ_base=remote)
    assert resp.status_code == 503
    assert resp.json["checks"]["redis"] == {"ok": False, "error": "ConnectionError"}
    assert "10.0.0.7" not in resp.get_data(as_text=True)
    assert "pools" not in resp.get_data(as_text=True)
    # The operator on the host itself, or with the token, sees why.
    local = client.get("/health")
    assert "10.0.0.7:6379" in local.json["checks"]["redis"]["error"]


def test_the_health_token_shows_the_detail_to_a_remote_caller(app, monkeypatch):
    from dataclasses import replace

    app.config["GRIMBOTS_SETTINGS"] = replace(app.config["GRIMBOTS_SETTINGS"], health_token="t0k")
    client = app.test_client()
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    anonymous = client.get("/health", environ_base=remote).json
    wrong = client.get("/health", environ_base=remote, headers={"Authorization": "Bearer x"}).json
    right = client.get("/health", environ_base=remote, headers={"Authorization": "Bearer t0k"}).json
    assert "ms" not in anonymous["checks"]["database"] and "ms" not in wrong["checks"]["database"]
    assert "pool_in_use" in right["checks"]["database"]
    assert anonymous["checks"]["database"]["backend"] == right["checks"]["database"]["backend"]
    # The release each node runs (a rolling update's test watches it change), with the detail only.
    assert right["version"] == metadata.version("grimbots") and "version" not in anonymous


def test_metric_labels_come_from_fixed_sets(client, db):
    with db.session() as session:
        seller, _ = make_seller(session)
        bot = make_bot(session, seller)
    headers = {"X-Telegram-Bot-Api-Secret-Token": bot.webhook_secret}
    client.post(
        f"/webhook/telegram/{bot.id}", json={"update_id": 1, "zz_new_kind": {}}, headers=headers
    )
    client.open("/health", method="BREW")
    body = client.get("/metrics").get_data(as_text=True)
    assert 'grimbots_telegram_updates_received_total{kind="other"}' in body
    assert "zz_new_kind" not in body and "BREW" not in body
    assert 'method="OTHER"' in body
    assert 'route="webhook"' in body and 'route="health"' in body


def test_a_redis_failure_anywhere_is_a_503_and_its_message_stays_out_of_the_log(
    app, monkeypatch, caplog
):
    import redis

    @app.get("/_boom")
    def boom():
        raise redis.ConnectionError("password=hunter2 at 10.0.0.7")

    resp = app.test_client().get("/_boom")
    assert resp.status_code == 503 and resp.json == {
        "ok": False,
        "error": "temporarily unavailable",
    }
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "ConnectionError" in logged and "hunter2" not in logged


def _metric(body: str, name: str) -> float:
    values = [
        float(line.split()[-1])
        for line in body.splitlines()
        if line.startswith(name) and not line.startswith("#")
    ]
    assert values, f"{name} not in /metrics"
    return sum(values)


def test_active_users_count_distinct_senders_of_processed_updates(client, db, drain):
    with db.session() as session:
        seller, _ = make_seller(session)
        bot = make_bot(session, seller)
    headers = {"X-Telegram-Bot-Api-Secret-Token": bot.webhook_secret}
    for user in (7101, 7102, 7103, 7101):  # three users, one of them twice
        update = message_update(user, f"hi from {user}")
        assert (
            client.post(f"/webhook/telegram/{bot.id}", json=update, headers=headers).status_code
            == 200
        )
    before = _metric(client.get("/metrics").get_data(as_text=True), "grimbots_active_users")
    drain()
    after = _metric(client.get("/metrics").get_data(as_text=True), "grimbots_active_users")
    assert (before, after) == (0, 3)


def test_active_users_leave_the_count_after_the_window(redis_client, settings):
    from grimbots import activity

    last = 600.0 + 60 * (activity.WINDOW_MINUTES - 1)  # the window's last minute
    activity.seen(1, now=600.0)
    activity.seen(2, now=last)
    assert activity.count(now=600.0) == 1
    assert activity.count(now=last) == 2
    assert activity.count(now=last + 60) == 1  # user 1's minute left the window


def test_the_database_pool_bound_is_exported_beside_its_use(client, db, settings):
    body = client.get("/metrics").get_data(as_text=True)
    expected = settings.database_pool_size + settings.database_max_overflow
    if db.is_sqlite:
        expected = db.pool_bound
    assert _metric(body, "grimbots_db_pool_max_connections") == expected
    assert _metric(body, "grimbots_db_pool_connections_in_use") <= _metric(
        body, "grimbots_db_pool_max_connections"
    )
