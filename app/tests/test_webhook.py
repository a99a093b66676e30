"""Webhook intake: validation, secrets, dedup layers 1-3, fail-closed on Redis errors."""

from __future__ import annotations

import threading

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from grimbots import redis_pool
from grimbots.models import InboundUpdate
from tests.factories import (
    callback_update,
    make_bot,
    make_funnel,
    make_seller,
    message_update,
    start_update,
)

HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest.fixture
def bot(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        funnel = make_funnel(session, seller)
        return make_bot(session, seller, funnel)


def post(client, bot, update, secret=None, **kw):
    return client.post(
        f"/webhook/telegram/{bot.id}",
        json=update,
        headers={HEADER: bot.webhook_secret if secret is None else secret},
        **kw,
    )


def welcome_count(fake_tg, chat_id):
    return len(fake_tg.sent(method="sendPhoto", chat_id=chat_id))


def test_valid_update_is_accepted_and_processed_by_a_worker(client, bot, fake_tg, drain, db):
    resp = post(client, bot, start_update(5001))
    assert resp.status_code == 200 and resp.json == {"ok": True}
    drain()
    assert welcome_count(fake_tg, 5001) == 1
    with db.session() as session:
        assert session.query(InboundUpdate).filter_by(bot_id=bot.id).count() == 1


def test_wrong_secret_is_forbidden(client, bot):
    resp = post(client, bot, start_update(5002), secret="nope")
    assert resp.status_code == 403
    assert resp.json["ok"] is False


def test_missing_secret_is_forbidden(client, bot):
    resp = client.post(f"/webhook/telegram/{bot.id}", json=start_update(5003))
    assert resp.status_code == 403


def test_unknown_bot_is_not_found(client, bot):
    resp = client.post("/webhook/telegram/999999", json=start_update(1), headers={HEADER: "x"})
    assert resp.status_code == 404
    assert resp.is_json


def test_inactive_bot_is_not_found(client, db, fake_tg):
    with db.session() as session:
        seller, _ = make_seller(session)
        off = make_bot(session, seller, active=False)
    assert post(client, off, start_update(5004)).status_code == 404


@pytest.mark.parametrize(
    "body, why",
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"message": {}}', "no update_id"),
        (b'{"update_id": "12"}', "update_id not an integer"),
        (b'{"update_id": 1.5}', "update_id a float"),
        (b'{"update_id": true}', "update_id a boolean"),
        (b'{"update_id": -3}', "update_id negative"),
    ],
)
def test_bad_update_bodies_are_rejected_with_json_400(client, bot, body, why):
    resp = client.post(
        f"/webhook/telegram/{bot.id}",
        data=body,
        headers={HEADER: bot.webhook_secret, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400, why
    assert resp.is_json and resp.json["ok"] is False


def test_body_over_one_mebibyte_is_rejected(client, bot):
    big = b'{"update_id": 1, "message": {"text": "' + b"a" * (1024 * 1024) + b'"}}'
    resp = client.post(
        f"/webhook/telegram/{bot.id}",
        data=big,
        headers={HEADER: bot.webhook_secret, "Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    assert resp.is_json


def test_unknown_update_types_are_acknowledged(client, bot, drain):
    resp = post(client, bot, {"update_id": 777001, "brand_new_kind": {"x": 1}})
    assert resp.status_code == 200
    drain()


def test_second_delivery_of_an_update_is_ignored(client, bot, fake_tg, drain):
    update = start_update(5005)
    assert post(client, bot, update).json == {"ok": True}
    drain()
    again = post(client, bot, update)
    assert again.status_code == 200 and again.json["duplicate"] == "update_id"
    drain()
    assert welcome_count(fake_tg, 5005) == 1


def test_late_duplicate_after_processing_is_still_suppressed(client, bot, fake_tg, drain):
    """Locks expire; they are not deleted after the send (the old bug let late twins in)."""
    update = callback_update(5006, "buy:1")
    post(client, bot, update)
    drain()
    assert post(client, bot, update).json["duplicate"] == "update_id"


def test_many_concurrent_deliveries_end_in_one_update_and_one_reply(app, bot, fake_tg, drain, db):
    update = start_update(5007)
    statuses, barrier = [], threading.Barrier(20)

    def deliver():
        client = app.test_client()
        barrier.wait()
        statuses.append(post(client, bot, update).json)

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for s in statuses if s == {"ok": True}) == 1
    assert sum(1 for s in statuses if s.get("duplicate")) == 19
    drain()
    assert welcome_count(fake_tg, 5007) == 1
    with db.session() as session:
        assert session.query(InboundUpdate).filter_by(bot_id=bot.id).count() == 1


def test_same_update_id_on_two_bots_is_processed_for_each(client, db, fake_tg, drain):
    """update_id is unique per bot only: locks are keyed per bot."""
    with db.session() as session:
        seller, _ = make_seller(session)
        funnel = make_funnel(session, seller)
        bot_a, bot_b = make_bot(session, seller, funnel), make_bot(session, seller, funnel)
    assert post(client, bot_a, start_update(5008, update_id=42)).json == {"ok": True}
    assert post(client, bot_b, start_update(5008, update_id=42)).json == {"ok": True}
    drain()
    assert len(fake_tg.sent(method="sendPhoto", token=bot_a.token)) == 1
    assert len(fake_tg.sent(method="sendPhoto", token=bot_b.token)) == 1


def test_same_message_with_a_new_update_id_within_seconds_is_suppressed(client, bot):
    first = post(client, bot, message_update(5009, "quero comprar"))
    twin = post(client, bot, message_update(5009, "quero comprar"))
    assert first.json == {"ok": True}
    assert twin.json["duplicate"] == "message_hash"


def test_twin_start_with_another_payload_is_stopped_by_the_start_lock(client, bot, fake_tg, drain):
    assert post(client, bot, start_update(5010, "a" * 32)).json == {"ok": True}
    assert post(client, bot, start_update(5010, "b" * 32)).json["duplicate"] == "start_lock"
    drain()
    assert welcome_count(fake_tg, 5010) == 1


def test_redis_down_answers_503_instead_of_processing_unprotected(client, bot, monkeypatch):
    def broken(*a, **kw):
        raise RedisConnectionError("redis is down")

    monkeypatch.setattr(redis_pool.RedisPools, "state", broken)
    resp = post(client, bot, start_update(5011))
    assert resp.status_code == 503
    assert resp.is_json


def _deliveries(client, bot, update_id: int) -> list[tuple[int, bytes]]:
    """One of each answer the intake gives: taken, duplicate, 403, 404, 400."""
    answers = [
        post(client, bot, start_update(update_id)),
        post(client, bot, start_update(update_id)),
    ]
    answers.append(post(client, bot, start_update(update_id + 1), secret="nope"))
    answers.append(client.post("/webhook/telegram/999999", json=start_update(update_id + 2)))
    answers.append(
        client.post(
            f"/webhook/telegram/{bot.id}",
            data=b'{"update_id": "x"}',
            headers={HEADER: bot.webhook_secret, "Content-Type": "application/json"},
        )
    )
    return [(a.status_code, a.get_data()) for a in answers]


def _requests_counted(client) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    body = client.get("/metrics").get_data(as_text=True)
    (family,) = [
        f for f in text_string_to_metric_families(body) if f.name == "grimbots_http_requests"
    ]
    return {
        s.labels["status"]: s.value
        for s in family.samples
        if s.name.endswith("_total") and s.labels["route"] == "webhook"
    }


def test_the_fast_path_and_the_flask_route_answer_and_count_alike(app, client, bot, monkeypatch):
    from grimbots import webhook_wsgi

    view, calls = app.view_functions["webhook.telegram_webhook"], []
    app.view_functions["webhook.telegram_webhook"] = lambda **kw: calls.append(1) or view(**kw)
    before = _requests_counted(client)
    fast = _deliveries(client, bot, 7100)
    assert calls == [], "the deliveries went through Flask, not the fast path"
    after_fast = _requests_counted(client)
    # Every delivery to Flask's route instead, as an unusual path would go.
    monkeypatch.setattr(webhook_wsgi, "_bot_id", lambda path: None)
    routed = _deliveries(client, bot, 7200)
    assert len(calls) == 5
    after_routed = _requests_counted(client)
    assert [s for s, _ in fast] == [200, 200, 403, 404, 400]
    assert fast == routed
    # Counters are per process: other tests' answers are in them, only the deltas count.
    fast_counts = {k: v - before.get(k, 0) for k, v in after_fast.items() if v != before.get(k)}
    routed_counts = {
        k: v - after_fast.get(k, 0) for k, v in after_routed.items() if v != after_fast.get(k)
    }
    assert fast_counts == routed_counts == {"200": 2, "403": 1, "404": 1, "400": 1}


@pytest.mark.parametrize(
    "path", ["/webhook/telegram/0042", "/webhook/telegram/99999999999", "/webhook/telegram/4x"]
)
def test_a_path_the_fast_path_does_not_take_gets_flasks_answer(client, path):
    resp = client.post(path, json=start_update(7300))
    assert resp.status_code == 404 and resp.is_json
