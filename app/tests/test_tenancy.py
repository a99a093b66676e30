"""Tenancy: one seller can never read or touch another's objects, and ids do not leak.

Seller B gets exactly what a non-existent id gets (404, same body) for each of seller A's bots,
funnels, pools, campaigns and stats, and cannot reference A's objects from its own.
"""

from __future__ import annotations

import pytest

from grimbots import queues
from grimbots.auth import create_seller
from grimbots.models import Bot, Campaign, Funnel, RedirectPool

TOKEN = "123456789:AAH0123456789abcdefghijklmnopqrstu"
MISSING = 2_000_000_000


@pytest.fixture
def tenants(client, db):
    with db.session() as session:
        _, token_a = create_seller(session, "A", "a@example.com")
        _, token_b = create_seller(session, "B", "b@example.com")

    def caller(token):
        def call(method, path, json=None):
            return client.open(
                path, method=method, json=json, headers={"Authorization": f"Bearer {token}"}
            )

        return call

    a, b = caller(token_a), caller(token_b)
    funnel = a(
        "POST",
        "/api/funnels",
        {"name": "A funnel", "welcome_text": "oi", "offers": [{"title": "x", "price_cents": 100}]},
    ).json
    bot = a(
        "POST", "/api/bots", {"token": TOKEN, "username": "seller_a_bot", "funnel_id": funnel["id"]}
    ).json
    pool = a("POST", "/api/pools", {"slug": "a-pool", "bots": [{"bot_id": bot["id"]}]}).json
    campaign = a("POST", "/api/campaigns", {"bot_id": bot["id"], "name": "A", "text": "t"}).json
    b_bot = b("POST", "/api/bots", {"token": TOKEN, "username": "seller_b_bot"}).json
    b_pool = b("POST", "/api/pools", {"slug": "b-pool"}).json
    return {
        "a": a,
        "b": b,
        "bot": bot,
        "funnel": funnel,
        "pool": pool,
        "campaign": campaign,
        "b_bot": b_bot,
        "b_pool": b_pool,
    }


def paths(t):
    """(method, path template, body) for every object route; {id} is filled per object."""
    return [
        ("GET", "/api/bots/{bot}", None),
        ("PATCH", "/api/bots/{bot}", {"active": False}),
        ("PUT", "/api/bots/{bot}", {"webhook_secret": "stolen"}),
        ("DELETE", "/api/bots/{bot}", None),
        ("GET", "/api/bots/{bot}/stats", None),
        ("GET", "/api/funnels/{funnel}", None),
        ("PATCH", "/api/funnels/{funnel}", {"access_link": "https://evil.example"}),
        ("DELETE", "/api/funnels/{funnel}", None),
        ("GET", "/api/pools/{pool}", None),
        ("PATCH", "/api/pools/{pool}", {"strategy": "weighted"}),
        ("DELETE", "/api/pools/{pool}", None),
        ("GET", "/api/pools/{pool}/stats", None),
        ("GET", "/api/campaigns/{campaign}", None),
        ("POST", "/api/campaigns/{campaign}/start", None),
        ("POST", "/api/campaigns/{campaign}/stop", None),
    ]


def fill(template, ids):
    return template.format(**ids)


def test_another_sellers_objects_answer_404_like_missing_ones(tenants):
    t = tenants
    theirs = {k: t[k]["id"] for k in ("bot", "funnel", "pool", "campaign")}
    missing = dict.fromkeys(theirs, MISSING)
    for method, template, body in paths(t):
        foreign = t["b"](method, fill(template, theirs), body)
        absent = t["b"](method, fill(template, missing), body)
        assert foreign.status_code == 404, (method, template, foreign.json)
        # Same answer as for an id that does not exist: nothing tells B the object is there.
        assert foreign.json == absent.json, (method, template)


def test_another_sellers_requests_change_nothing(tenants, db):
    t = tenants
    theirs = {k: t[k]["id"] for k in ("bot", "funnel", "pool", "campaign")}
    for method, template, body in paths(t):
        t["b"](method, fill(template, theirs), body)
    with db.session() as session:
        bot = session.get(Bot, t["bot"]["id"])
        funnel = session.get(Funnel, t["funnel"]["id"])
        pool = session.get(RedirectPool, t["pool"]["id"])
        campaign = session.get(Campaign, t["campaign"]["id"])
        assert bot.active is True and bot.webhook_secret != "stolen"
        assert funnel is not None and funnel.access_link == ""
        assert pool is not None and pool.strategy == "round_robin"
        assert campaign.status == "draft" and campaign.stop_requested is False
    assert queues.get_queue(queues.MARATHON).count == 0


def test_lists_show_only_the_callers_objects(tenants):
    t = tenants
    for kind in ("bots", "funnels", "pools", "campaigns"):
        mine = t["b"]("GET", f"/api/{kind}").json["items"]
        assert t[kind[:-1]]["id"] not in {item["id"] for item in mine}, kind
    assert [b["id"] for b in t["b"]("GET", "/api/bots").json["items"]] == [t["b_bot"]["id"]]
    assert t["a"]("GET", "/api/campaigns").json["total"] == 1
    assert t["b"]("GET", f"/api/campaigns?bot_id={t['bot']['id']}").json["total"] == 0


def test_a_seller_cannot_put_another_sellers_bot_in_a_pool(tenants):
    t = tenants
    create = t["b"]("POST", "/api/pools", {"slug": "b-steal", "bots": [{"bot_id": t["bot"]["id"]}]})
    assert create.status_code == 400 and create.json["field"] == "bots[0].bot_id"
    update = t["b"](
        "PATCH",
        f"/api/pools/{t['b_pool']['id']}",
        {"bots": [{"bot_id": t["b_bot"]["id"]}, {"bot_id": t["bot"]["id"]}]},
    )
    assert update.status_code == 400
    assert t["b"]("GET", f"/api/pools/{t['b_pool']['id']}").json["bots"] == []


def test_a_seller_cannot_run_a_campaign_on_another_sellers_bot(tenants):
    t = tenants
    resp = t["b"]("POST", "/api/campaigns", {"bot_id": t["bot"]["id"], "name": "x", "text": "y"})
    assert resp.status_code == 400 and resp.json["field"] == "bot_id"
    missing = t["b"]("POST", "/api/campaigns", {"bot_id": MISSING, "name": "x", "text": "y"})
    assert missing.json["error"].replace(str(MISSING), "N") == resp.json["error"].replace(
        str(t["bot"]["id"]), "N"
    )


def test_a_seller_cannot_attach_another_sellers_funnel_to_a_bot(tenants):
    t = tenants
    resp = t["b"]("PATCH", f"/api/bots/{t['b_bot']['id']}", {"funnel_id": t["funnel"]["id"]})
    assert resp.status_code == 400 and resp.json["field"] == "funnel_id"
    create = t["b"](
        "POST",
        "/api/bots",
        {"token": TOKEN, "username": "b_second_bot", "funnel_id": t["funnel"]["id"]},
    )
    assert create.status_code == 400


def test_a_seller_cannot_use_another_sellers_offer_as_order_bump(tenants):
    t = tenants
    b_funnel = t["b"]("POST", "/api/funnels", {"name": "B", "welcome_text": "oi"}).json
    resp = t["b"](
        "PATCH",
        f"/api/funnels/{b_funnel['id']}",
        {"order_bump_offer_id": t["funnel"]["offers"][0]["id"]},
    )
    assert resp.status_code == 400


def test_a_seller_cannot_adopt_another_sellers_offer_by_id(tenants):
    t = tenants
    b_funnel = t["b"]("POST", "/api/funnels", {"name": "B", "welcome_text": "oi"}).json
    resp = t["b"](
        "PATCH",
        f"/api/funnels/{b_funnel['id']}",
        {"offers": [{"id": t["funnel"]["offers"][0]["id"], "title": "mine now", "price_cents": 1}]},
    )
    assert resp.status_code == 400
    offer = t["a"]("GET", f"/api/funnels/{t['funnel']['id']}").json["offers"][0]
    assert offer["title"] == "x" and offer["price_cents"] == 100
