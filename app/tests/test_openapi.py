"""/openapi.json is generated from the routes' schemas: valid OpenAPI 3, one operation for every
route the app serves (a route without a schema fails), and what the routes really answer."""

from __future__ import annotations

import re
from importlib import resources

import jsonschema
import pytest
import schemathesis
from flask import Flask

from grimbots.app import register_routes
from grimbots.auth import create_seller
from grimbots.openapi import build, document

TOKEN = "123456789:AAH0123456789abcdefghijklmnopqrstu"


def _served(app: Flask) -> set[tuple[str, str]]:
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        served |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return served


def _described(doc: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in doc["paths"].items() for method in item}


def test_the_generated_document_is_valid_openapi_3():
    doc = document()
    assert doc["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(doc).validate()  # against the OpenAPI 3.1 meta-schema


def test_no_hand_kept_openapi_file_ships_with_the_package():
    assert not resources.files("grimbots").joinpath("openapi.json").is_file()


def test_the_document_describes_exactly_the_routes_the_app_serves(app):
    assert _served(app) == _described(document())


def test_a_route_without_a_schema_fails_the_document():
    app = Flask("with-a-new-route")
    register_routes(app)
    app.add_url_rule("/api/new-thing", "new_thing", lambda: "", methods=["GET"])
    with pytest.raises(LookupError, match="/api/new-thing"):
        build(app)


def test_the_app_serves_the_generated_document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.get_json() == document()


def test_the_schemas_validate_request_bodies_with_the_field_named(client, db):
    with db.session() as session:
        _, token = create_seller(session, "Ana", "ana@example.com")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"name": "F", "welcome_text": "Oi", "offers": [{"title": "x", "price_cents": "1"}]}
    response = client.post("/api/funnels", json=body, headers=headers)
    assert response.status_code == 400
    assert response.json["ok"] is False and response.json["field"] == "offers[0].price_cents"
    response = client.post("/api/bots", json={"token": TOKEN, "owner": 2}, headers=headers)
    assert response.status_code == 400 and response.json["fields"] == ["owner"]
    response = client.post("/api/bots", json={"token": TOKEN}, headers=headers)
    assert response.status_code == 400 and response.json["fields"] == ["username"]


def _check(doc: dict, path: str, method: str, response) -> None:
    """The answer fits the schema the document gives for its path, method and status."""
    answer = doc["paths"][path][method.lower()]["responses"][str(response.status_code)]
    schema = answer["content"]["application/json"]["schema"]
    jsonschema.validate(
        response.get_json(),
        {**schema, "components": doc["components"]},
        cls=jsonschema.Draft202012Validator,
    )


def test_answers_fit_the_schemas_the_document_gives(client, db):
    doc = document()
    with db.session() as session:
        _, token = create_seller(session, "Ana", "ana@example.com")
    headers = {"Authorization": f"Bearer {token}"}

    def call(method: str, path: str, template: str, json=None):
        response = client.open(path, method=method, json=json, headers=headers)
        assert response.status_code < 300, response.get_json()
        _check(doc, template, method, response)
        return response.get_json()

    bot = call("POST", "/api/bots", "/api/bots", {"token": TOKEN, "username": "ana_sales_bot"})
    funnel = call(
        "POST",
        "/api/funnels",
        "/api/funnels",
        {
            "name": "F",
            "welcome_text": "Oi",
            "offers": [{"title": "Curso", "price_cents": 9700}],
            "downsells": [{"delay_minutes": 10, "price_cents": 4700, "text": "Desconto!"}],
        },
    )
    pool = call(
        "POST", "/api/pools", "/api/pools", {"slug": "ads", "bots": [{"bot_id": bot["id"]}]}
    )
    campaign = call(
        "POST",
        "/api/campaigns",
        "/api/campaigns",
        {
            "bot_id": bot["id"],
            "name": "c",
            "text": "t",
            "buttons": [{"text": "b", "url": "https://x.io"}],
        },
    )
    for kind in ("bots", "funnels", "pools", "campaigns"):
        call("GET", f"/api/{kind}", f"/api/{kind}")
    call("GET", f"/api/bots/{bot['id']}/stats", "/api/bots/{bot_id}/stats")
    call("GET", f"/api/campaigns/{campaign['id']}", "/api/campaigns/{campaign_id}")
    call("POST", f"/api/campaigns/{campaign['id']}/stop", "/api/campaigns/{campaign_id}/stop")
    call("DELETE", f"/api/pools/{pool['id']}", "/api/pools/{pool_id}")
    call("DELETE", f"/api/funnels/{funnel['id']}", "/api/funnels/{funnel_id}")
    response = client.get("/api/bots")
    assert response.status_code == 401
    _check(doc, "/api/bots", "GET", response)
