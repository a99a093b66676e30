"""The sellers' admin API: bearer auth, CRUD of bots, funnels, pools, campaigns, stats, and a
clear 4xx JSON for every bad input (never a 500)."""

from __future__ import annotations

import hashlib
import re

import pytest

from grimbots import queues
from grimbots.auth import create_seller
from grimbots.models import Bot, Click, Lead, Payment, Seller
from tests.factories import start_update

TOKEN = "123456789:AAH0123456789abcdefghijklmnopqrstu"


@pytest.fixture
def seller(db):
    with db.session() as session:
        seller, token = create_seller(session, "Ana", "ana@example.com")
    return {"id": seller.id, "token": token, "headers": {"Authorization": f"Bearer {token}"}}


@pytest.fixture
def api(client, seller):
    def call(method: str, path: str, json=None, **kwargs):
        return client.open(path, method=method, json=json, headers=seller["headers"], **kwargs)

    return call


def new_bot(api, username="ana_sales_bot", **fields):
    resp = api("POST", "/api/bots", {"token": TOKEN, "username": username, **fields})
    assert resp.status_code == 201, resp.json
    return resp.json


def new_funnel(api, **fields):
    body = {
        "name": "Curso",
        "welcome_text": "Bem-vindo!",
        "welcome_media_type": "photo",
        "welcome_media_url": "https://example.com/w.jpg",
        "access_link": "https://t.me/+vip",
        "offers": [{"title": "Curso", "price_cents": 9700}, {"title": "VIP", "price_cents": 19700}],
        "downsells": [{"delay_minutes": 10, "price_cents": 4700, "text": "Desconto!"}],
        **fields,
    }
    resp = api("POST", "/api/funnels", body)
    assert resp.status_code == 201, resp.json
    return resp.json


# -- authentication ------------------------------------------------------------------------------


def test_request_without_token_is_unauthorized(client, seller):
    resp = client.get("/api/bots")
    assert resp.status_code == 401
    assert resp.json["ok"] is False
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer ", "Basic dXNlcjpwYXNz", "token", "Bearer " + "x" * 500],
)
def test_request_with_invalid_token_is_unauthorized(client, seller, header):
    resp = client.get("/api/bots", headers={"Authorization": header})
    assert resp.status_code == 401 and resp.json["ok"] is False


def test_valid_token_is_accepted(api):
    resp = api("GET", "/api/bots")
    assert resp.status_code == 200
    assert resp.json == {"items": [], "total": 0, "limit": 50, "offset": 0}


def test_tokens_are_stored_only_as_sha256(db, seller):
    with db.session() as session:
        row = session.get(Seller, seller["id"])
    assert row.api_token_hash == hashlib.sha256(seller["token"].encode()).hexdigest()
    assert seller["token"] not in row.api_token_hash
    assert len(seller["token"]) >= 43


# -- bots ----------------------------------------------------------------------------------------


def test_bot_is_created_without_echoing_its_secrets(api, db):
    bot = new_bot(api)
    assert set(bot) == {"id", "username", "funnel_id", "active", "status", "created_at"}
    assert bot["active"] is True and bot["username"] == "ana_sales_bot"
    with db.session() as session:
        row = session.get(Bot, bot["id"])
    assert row.token == TOKEN
    # Generated, and in the alphabet Telegram accepts for secret_token.
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,256}", row.webhook_secret)


def test_bot_webhook_secret_can_be_chosen(api, db):
    bot = new_bot(api, webhook_secret="my-own_Secret-123")
    with db.session() as session:
        assert session.get(Bot, bot["id"]).webhook_secret == "my-own_Secret-123"


def test_bot_username_must_be_unique(api):
    new_bot(api)
    resp = api("POST", "/api/bots", {"token": TOKEN, "username": "ana_sales_bot"})
    assert resp.status_code == 409 and resp.json["ok"] is False


def test_bots_are_listed_with_pagination(api):
    for n in range(3):
        new_bot(api, username=f"ana_bot_{n}")
    page = api("GET", "/api/bots?limit=2").json
    assert page["total"] == 3 and len(page["items"]) == 2
    rest = api("GET", "/api/bots?limit=2&offset=2").json
    assert [b["username"] for b in rest["items"]] == ["ana_bot_2"]


def test_bot_is_read_updated_and_attached_to_a_funnel(api):
    bot = new_bot(api)
    funnel = new_funnel(api)
    resp = api("PATCH", f"/api/bots/{bot['id']}", {"funnel_id": funnel["id"], "active": False})
    assert resp.status_code == 200
    assert resp.json["funnel_id"] == funnel["id"] and resp.json["active"] is False
    assert api("GET", f"/api/bots/{bot['id']}").json["funnel_id"] == funnel["id"]
    assert "token" not in resp.json and "webhook_secret" not in resp.json


def test_deactivating_a_bot_takes_effect_at_the_webhook_at_once(api, client, db):
    bot = new_bot(api)
    with db.session() as session:
        secret = session.get(Bot, bot["id"]).webhook_secret
    header = {"X-Telegram-Bot-Api-Secret-Token": secret}
    warm = client.post(f"/webhook/telegram/{bot['id']}", json=start_update(1), headers=header)
    assert warm.status_code == 200  # the webhook now caches the bot as active
    api("PATCH", f"/api/bots/{bot['id']}", {"active": False})
    after = client.post(f"/webhook/telegram/{bot['id']}", json=start_update(2), headers=header)
    assert after.status_code == 404


def test_rotating_the_webhook_secret_takes_effect_at_once(api, client, db):
    bot = new_bot(api, webhook_secret="first-secret")
    header = {"X-Telegram-Bot-Api-Secret-Token": "first-secret"}
    assert (
        client.post(
            f"/webhook/telegram/{bot['id']}", json=start_update(3), headers=header
        ).status_code
        == 200
    )
    api("PATCH", f"/api/bots/{bot['id']}", {"webhook_secret": "second-secret"})
    assert (
        client.post(
            f"/webhook/telegram/{bot['id']}", json=start_update(4), headers=header
        ).status_code
        == 403
    )


def test_deleting_a_bot_deactivates_it_and_keeps_its_history(api, db):
    bot = new_bot(api)
    resp = api("DELETE", f"/api/bots/{bot['id']}")
    assert resp.status_code == 200 and resp.json["active"] is False
    with db.session() as session:
        assert session.get(Bot, bot["id"]).active is False


def test_missing_bot_is_a_json_404(api):
    for path in ("/api/bots/424242", "/api/bots/99999999999999999999", "/api/bots/abc"):
        resp = api("GET", path)
        assert resp.status_code == 404 and resp.json["ok"] is False


# -- funnels -------------------------------------------------------------------------------------


def test_funnel_is_created_with_offers_and_downsells(api):
    funnel = new_funnel(api)
    assert [o["price_cents"] for o in funnel["offers"]] == [9700, 19700]
    assert funnel["downsells"][0] == {
        "id": funnel["downsells"][0]["id"],
        "delay_minutes": 10,
        "price_cents": 4700,
        "text": "Desconto!",
    }
    assert api("GET", f"/api/funnels/{funnel['id']}").json == funnel


def test_funnel_update_keeps_offers_given_by_id_and_drops_the_rest(api):
    funnel = new_funnel(api)
    first, second = funnel["offers"]
    resp = api(
        "PATCH",
        f"/api/funnels/{funnel['id']}",
        {
            "offers": [
                {"id": first["id"], "title": "Curso+", "price_cents": 9900},
                {"title": "Novo", "price_cents": 500},
            ],
        },
    )
    assert resp.status_code == 200
    offers = resp.json["offers"]
    assert offers[0] == {"id": first["id"], "title": "Curso+", "price_cents": 9900}
    assert offers[1]["title"] == "Novo" and second["id"] not in {o["id"] for o in offers}


def test_order_bump_must_be_an_offer_of_the_funnel_and_lapses_with_it(api):
    funnel = new_funnel(api)
    bump_id = funnel["offers"][1]["id"]
    resp = api("PATCH", f"/api/funnels/{funnel['id']}", {"order_bump_offer_id": bump_id})
    assert resp.json["order_bump_offer_id"] == bump_id
    other = new_funnel(api)
    bad = api(
        "PATCH", f"/api/funnels/{funnel['id']}", {"order_bump_offer_id": other["offers"][0]["id"]}
    )
    assert bad.status_code == 400 and bad.json["field"] == "order_bump_offer_id"
    keep_first = [{"id": funnel["offers"][0]["id"], "title": "Curso", "price_cents": 9700}]
    resp = api("PATCH", f"/api/funnels/{funnel['id']}", {"offers": keep_first})
    assert resp.json["order_bump_offer_id"] is None


def test_funnel_media_can_be_removed(api):
    funnel = new_funnel(api)
    resp = api("PATCH", f"/api/funnels/{funnel['id']}", {"welcome_media_type": None})
    assert resp.status_code == 200
    assert resp.json["welcome_media_type"] is None and resp.json["welcome_media_url"] is None


def test_deleting_a_funnel_detaches_its_bots(api):
    funnel = new_funnel(api)
    bot = new_bot(api, funnel_id=funnel["id"])
    assert api("DELETE", f"/api/funnels/{funnel['id']}").status_code == 200
    assert api("GET", f"/api/funnels/{funnel['id']}").status_code == 404
    assert api("GET", f"/api/bots/{bot['id']}").json["funnel_id"] is None


# -- pools ---------------------------------------------------------------------------------------


def test_pool_is_created_updated_and_deleted(api):
    a, b = new_bot(api, username="pool_bot_a"), new_bot(api, username="pool_bot_b")
    resp = api(
        "POST",
        "/api/pools",
        {
            "slug": "promo-1",
            "strategy": "weighted",
            "bots": [{"bot_id": a["id"], "weight": 3}, {"bot_id": b["id"]}],
        },
    )
    assert resp.status_code == 201
    pool = resp.json
    assert pool["bots"] == [{"bot_id": a["id"], "weight": 3}, {"bot_id": b["id"], "weight": 1}]
    resp = api("PATCH", f"/api/pools/{pool['id']}", {"bots": [{"bot_id": b["id"], "weight": 5}]})
    assert resp.json["bots"] == [{"bot_id": b["id"], "weight": 5}]
    assert api("DELETE", f"/api/pools/{pool['id']}").status_code == 200
    assert api("GET", f"/api/pools/{pool['id']}").status_code == 404


def test_pool_slug_must_be_unique(api):
    assert api("POST", "/api/pools", {"slug": "same-slug"}).status_code == 201
    resp = api("POST", "/api/pools", {"slug": "same-slug"})
    assert resp.status_code == 409 and resp.json["ok"] is False


def test_pool_redirects_to_a_bot_created_through_the_api(api, client):
    bot = new_bot(api)
    api("POST", "/api/pools", {"slug": "go-here", "bots": [{"bot_id": bot["id"]}]})
    resp = client.get("/go/go-here?utm_source=fb")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("https://t.me/ana_sales_bot?start=")


# -- campaigns -----------------------------------------------------------------------------------


def test_campaign_is_created_started_and_stopped(api):
    bot = new_bot(api)
    resp = api(
        "POST",
        "/api/campaigns",
        {
            "bot_id": bot["id"],
            "name": "Black Friday",
            "text": "50% off",
            "buttons": [{"text": "Comprar", "url": "https://example.com/buy"}],
            "audience": "unpaid",
        },
    )
    assert resp.status_code == 201
    campaign = resp.json
    assert campaign["status"] == "draft" and campaign["progress"]["total"] == 0
    started = api("POST", f"/api/campaigns/{campaign['id']}/start")
    assert started.status_code == 202 and started.json["status"] == "running"
    assert queues.get_queue(queues.MARATHON).count == 1
    again = api("POST", f"/api/campaigns/{campaign['id']}/start")
    assert again.status_code == 409
    assert queues.get_queue(queues.MARATHON).count == 1
    stopped = api("POST", f"/api/campaigns/{campaign['id']}/stop")
    assert stopped.status_code == 202 and stopped.json["stop_requested"] is True
    listed = api("GET", f"/api/campaigns?bot_id={bot['id']}").json
    assert [c["id"] for c in listed["items"]] == [campaign["id"]]


def test_stopping_a_draft_campaign_stops_it_without_running(api):
    bot = new_bot(api)
    campaign = api("POST", "/api/campaigns", {"bot_id": bot["id"], "name": "x", "text": "y"}).json
    resp = api("POST", f"/api/campaigns/{campaign['id']}/stop")
    assert resp.json["status"] == "stopped"
    assert queues.get_queue(queues.MARATHON).count == 0


def test_campaign_start_answers_503_and_stays_stopped_when_the_queue_is_down(api, monkeypatch):
    bot = new_bot(api)
    campaign = api("POST", "/api/campaigns", {"bot_id": bot["id"], "name": "x", "text": "y"}).json

    def broken(*args, **kwargs):
        raise ConnectionError("queue Redis down")

    monkeypatch.setattr(queues, "enqueue", broken)
    resp = api("POST", f"/api/campaigns/{campaign['id']}/start")
    assert resp.status_code == 503 and resp.json["ok"] is False
    assert api("GET", f"/api/campaigns/{campaign['id']}").json["status"] == "stopped"


# -- stats ---------------------------------------------------------------------------------------


def test_bot_and_pool_stats_count_clicks_leads_sales_and_revenue_by_utm(api, db):
    bot = new_bot(api)
    pool = api("POST", "/api/pools", {"slug": "stats-pool", "bots": [{"bot_id": bot["id"]}]}).json
    with db.session() as session:
        for n, source in enumerate(["fb", "fb", "fb", "google"]):
            session.add(
                Click(
                    pool_id=pool["id"],
                    bot_id=bot["id"],
                    token=f"tok{n:029d}",
                    utm_source=source,
                    utm_campaign="bf",
                )
            )
        leads = []
        for n, source in enumerate(["fb", "fb", "google"]):
            lead = Lead(
                bot_id=bot["id"],
                telegram_user_id=100 + n,
                chat_id=100 + n,
                click_token=f"tok{n:029d}",
                utm_source=source,
                utm_campaign="bf",
            )
            session.add(lead)
            leads.append(lead)
        # A lead that did not come through the pool (direct /start) counts for the bot only.
        direct = Lead(bot_id=bot["id"], telegram_user_id=999, chat_id=999)
        session.add(direct)
        session.flush()
        bot_row = session.get(Bot, bot["id"])
        for n, (lead, status, cents) in enumerate(
            [
                (leads[0], "paid", 9700),
                (leads[1], "pending", 9700),
                (leads[2], "paid", 4700),
                (direct, "paid", 1000),
            ]
        ):
            session.add(
                Payment(
                    seller_id=bot_row.seller_id,
                    bot_id=bot["id"],
                    lead_id=lead.id,
                    gateway="sandbox",
                    gateway_txid=f"TX{n}",
                    amount_cents=cents,
                    status=status,
                )
            )
    stats = api("GET", f"/api/bots/{bot['id']}/stats").json
    assert (stats["clicks"], stats["leads"], stats["sales"], stats["revenue_cents"]) == (
        4,
        4,
        3,
        15400,
    )
    assert stats["conversion_rate"] == 0.75
    by = {(r["utm_source"], r["utm_campaign"]): r for r in stats["by_utm"]}
    assert by[("fb", "bf")]["clicks"] == 3 and by[("fb", "bf")]["leads"] == 2
    assert by[("fb", "bf")]["sales"] == 1 and by[("fb", "bf")]["revenue_cents"] == 9700
    assert by[(None, None)]["leads"] == 1 and by[(None, None)]["revenue_cents"] == 1000
    pool_stats = api("GET", f"/api/pools/{pool['id']}/stats").json
    assert (pool_stats["clicks"], pool_stats["leads"], pool_stats["sales"]) == (4, 3, 2)
    assert pool_stats["revenue_cents"] == 14400


def test_stats_of_an_empty_bot_are_zero_not_an_error(api):
    bot = new_bot(api)
    stats = api("GET", f"/api/bots/{bot['id']}/stats").json
    assert stats["clicks"] == stats["leads"] == stats["sales"] == 0
    assert stats["conversion_rate"] == 0.0 and stats["by_utm"] == []


# -- bad input: always a 4xx JSON ----------------------------------------------------------------

BAD_BOTS = [
    {"username": "valid_name_bot"},
    {"token": 123, "username": "valid_name_bot"},
    {"token": "not-a-token", "username": "valid_name_bot"},
    {"token": TOKEN, "username": "abc"},
    {"token": TOKEN, "username": "bad name bot"},
    {"token": TOKEN, "username": "nul\x00_bot"},
    {"token": TOKEN, "username": "x" * 65},
    {"token": TOKEN, "username": "valid_name_bot", "webhook_secret": "has space"},
    {"token": TOKEN, "username": "valid_name_bot", "webhook_secret": "a" * 257},
    {"token": TOKEN, "username": "valid_name_bot", "webhook_secret": ""},
    {"token": TOKEN, "username": "valid_name_bot", "funnel_id": "1"},
    {"token": TOKEN, "username": "valid_name_bot", "funnel_id": 99999999999},
    {"token": TOKEN, "username": "valid_name_bot", "funnel_id": 424242},
    {"token": TOKEN, "username": "valid_name_bot", "active": "yes"},
    {"token": TOKEN, "username": "valid_name_bot", "owner": 2},
]

GOOD_FUNNEL = {"name": "F", "welcome_text": "Oi"}
BAD_FUNNELS = [
    {"welcome_text": "Oi"},
    {**GOOD_FUNNEL, "name": ""},
    {**GOOD_FUNNEL, "name": "n" * 201},
    {"name": "F"},
    {**GOOD_FUNNEL, "welcome_text": "t" * 4097},
    {**GOOD_FUNNEL, "welcome_media_type": "gif", "welcome_media_url": "https://x.io/a.gif"},
    {**GOOD_FUNNEL, "welcome_media_type": "photo"},
    {**GOOD_FUNNEL, "welcome_media_type": "photo", "welcome_media_url": "ftp://x.io/a.jpg"},
    {**GOOD_FUNNEL, "welcome_media_url": "https://x.io/a.jpg"},
    {**GOOD_FUNNEL, "access_link": "javascript:alert(1)"},
    {**GOOD_FUNNEL, "offers": {"title": "x"}},
    {**GOOD_FUNNEL, "offers": ["x"]},
    {**GOOD_FUNNEL, "offers": [{"title": "x"}]},
    {**GOOD_FUNNEL, "offers": [{"title": "x", "price_cents": 0}]},
    {**GOOD_FUNNEL, "offers": [{"title": "x", "price_cents": -100}]},
    {**GOOD_FUNNEL, "offers": [{"title": "x", "price_cents": 19.9}]},
    {**GOOD_FUNNEL, "offers": [{"title": "x", "price_cents": "1990"}]},
    {**GOOD_FUNNEL, "offers": [{"title": "x", "price_cents": True}]},
    {**GOOD_FUNNEL, "offers": [{"title": "x", "price_cents": 10**12}]},
    {**GOOD_FUNNEL, "offers": [{"title": "", "price_cents": 100}]},
    {**GOOD_FUNNEL, "offers": [{"title": "t" * 65, "price_cents": 100}]},
    {**GOOD_FUNNEL, "offers": [{"title": "x", "price_cents": 100, "id": 424242}]},
    {**GOOD_FUNNEL, "offers": [{"title": "x", "price_cents": 100}] * 11},
    {**GOOD_FUNNEL, "offers": [{"title": "x", "price_cents": 100, "color": "red"}]},
    {**GOOD_FUNNEL, "downsells": [{"delay_minutes": 0, "price_cents": 100, "text": "d"}]},
    {**GOOD_FUNNEL, "downsells": [{"delay_minutes": 10, "price_cents": 100}]},
    {**GOOD_FUNNEL, "downsells": [{"delay_minutes": 10, "price_cents": 100, "text": "d" * 4097}]},
    {**GOOD_FUNNEL, "downsells": [{"delay_minutes": "10", "price_cents": 100, "text": "d"}]},
    {**GOOD_FUNNEL, "order_bump_offer_id": 424242},
]

BAD_POOLS = [
    {},
    {"slug": "ab"},
    {"slug": "Upper-Case"},
    {"slug": "with space"},
    {"slug": "s" * 65},
    {"slug": "ok-slug", "strategy": "random"},
    {"slug": "ok-slug", "bots": "1,2"},
    {"slug": "ok-slug", "bots": [{"weight": 1}]},
    {"slug": "ok-slug", "bots": [{"bot_id": 424242}]},
    {"slug": "ok-slug", "bots": [{"bot_id": "1"}]},
]

BAD_PAGES = ["limit=0", "limit=201", "limit=abc", "offset=-1", "limit=1.5", "offset=x"]


def post_expect_400(api, path, body):
    resp = api("POST", path, body)
    assert resp.status_code == 400, (body, resp.status_code, resp.json)
    assert resp.json["ok"] is False and resp.json["error"]
    return resp


# One test per resource looping over its cases (each failure names its body): a database per
# case would make the suite minutes slower for no extra coverage.


def test_bad_bot_input_is_a_400(api):
    for body in BAD_BOTS:
        post_expect_400(api, "/api/bots", body)


def test_bad_funnel_input_is_a_400(api):
    for body in BAD_FUNNELS:
        post_expect_400(api, "/api/funnels", body)


def test_bad_pool_input_is_a_400(api):
    for body in BAD_POOLS:
        post_expect_400(api, "/api/pools", body)


def test_pool_rejects_a_bot_listed_twice_and_a_zero_weight(api):
    bot = new_bot(api)
    post_expect_400(api, "/api/pools", {"slug": "twice", "bots": [{"bot_id": bot["id"]}] * 2})
    post_expect_400(
        api, "/api/pools", {"slug": "zero", "bots": [{"bot_id": bot["id"], "weight": 0}]}
    )


def test_bad_campaign_input_is_a_400(api):
    bot = new_bot(api)
    base = {"bot_id": bot["id"], "name": "c", "text": "hello"}
    for body in [
        {"name": "c", "text": "hello"},
        {**base, "bot_id": None},
        {**base, "text": "t" * 4097},
        {**base, "text": ""},
        {**base, "media_type": "photo"},
        {**base, "media_type": "audio", "media_url": "https://x.io/a"},
        {**base, "buttons": [{"text": "Buy", "url": "javascript:alert(1)"}]},
        {**base, "buttons": [{"text": "Buy"}]},
        {**base, "buttons": [{"text": "", "url": "https://x.io"}]},
        {**base, "buttons": [{"text": "b", "url": "https://x.io"}] * 11},
        {**base, "audience": "vip"},
        {**base, "name": "n\x00"},
    ]:
        post_expect_400(api, "/api/campaigns", body)


def test_bad_pagination_is_a_400(api):
    for query in BAD_PAGES:
        for kind in ("bots", "funnels", "pools", "campaigns"):
            resp = api("GET", f"/api/{kind}?{query}")
            assert resp.status_code == 400 and resp.json["ok"] is False, (kind, query)


def test_a_body_that_is_not_a_json_object_is_a_400(client, seller):
    for raw in (b"not json", b"[]", b"null", b'"text"', b"\xff"):
        for path in ("/api/bots", "/api/funnels", "/api/pools", "/api/campaigns"):
            resp = client.post(
                path, data=raw, headers={**seller["headers"], "Content-Type": "application/json"}
            )
            assert resp.status_code == 400 and resp.json["ok"] is False, (path, raw)


def test_bad_update_input_is_a_400_and_changes_nothing(api):
    bot = new_bot(api)
    resp = api("PATCH", f"/api/bots/{bot['id']}", {"active": False, "username": "no"})
    assert resp.status_code == 400
    assert api("GET", f"/api/bots/{bot['id']}").json["active"] is True


def test_unknown_route_and_method_are_json_errors(api):
    assert api("GET", "/api/nothing").json["ok"] is False
    resp = api("DELETE", "/api/bots")
    assert resp.status_code == 405 and resp.json["ok"] is False


def test_huge_body_is_refused_with_413(api):
    resp = api("POST", "/api/bots", {"token": TOKEN, "username": "big_bot", "x": "y" * 2**20})
    assert resp.status_code == 413 and resp.json["ok"] is False
