"""/openapi.json: the description of every route, generated from the schemas in the code.

Each view carries its description (`describe`): the pydantic models that validate its body and
query, and the answers it gives. `document()` walks the app's url_map and builds the OpenAPI 3.1
document from them, so there is no hand-kept copy to fall behind: a route whose view has no
description makes the document, and the test that builds it, fail. The fuzzing suite
(tests/test_fuzz_http.py) generates its requests from this document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from flask import Blueprint, Flask, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

bp = Blueprint("openapi", __name__)

REF_TEMPLATE = "#/components/schemas/{model}"
ATTRIBUTE = "__openapi__"
JSON = "application/json"
INFO = {
    "title": "GrimBots",
    "version": "1.0.0",
    "description": (
        "Every public endpoint of the GrimBots web app: the Telegram and payment webhooks, "
        "tracking links, the sellers' admin API and the operations endpoints. Every error is "
        'JSON {"ok": false, "error": ...}; a bad input is a 4xx, never a 5xx (503 means a '
        "dependency is away: try again)."
    ),
}
SECURITY_SCHEMES = {
    "sellerToken": {"type": "http", "scheme": "bearer", "description": "a seller's API token"},
    "telegramSecret": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Telegram-Bot-Api-Secret-Token",
        "description": "the bot's webhook secret, as given to setWebhook",
    },
    "gatewaySignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": "hex HMAC-SHA256 of the raw body with the gateway's secret",
    },
}
# <converter(args):name> or <name> in a Flask rule.
_RULE_ARG = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")

# An answer: a description, and a model, a raw JSON schema or None (no body), in a media type.
Schema = type[BaseModel] | dict | None


@dataclass(frozen=True)
class Answer:
    description: str
    schema: Schema = None
    media_type: str = JSON


@dataclass
class Operation:
    """What one view takes and answers; the same for every method of its rule."""

    summary: str
    tags: tuple[str, ...]
    responses: dict[int, Answer]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    security: str | None = None
    description: str | None = None
    operation_ids: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)

    def models(self) -> Iterable[tuple[type[BaseModel], str]]:
        if self.body is not None:
            yield self.body, "validation"
        for answer in self.responses.values():
            if isinstance(answer.schema, type):
                yield answer.schema, "serialization"


def describe(
    summary: str,
    *,
    tags: Iterable[str],
    responses: dict[int, Answer | str],
    **details: Any,
) -> Callable[[Callable], Callable]:
    """Attach a view's description (read only when the document is built: no cost per call)."""
    answers = {
        status: answer if isinstance(answer, Answer) else Answer(answer)
        for status, answer in responses.items()
    }
    operation = Operation(summary, tuple(tags), answers, **details)

    def decorate(view: Callable) -> Callable:
        setattr(view, ATTRIBUTE, operation)
        return view

    return decorate


def _path(rule: str) -> tuple[str, list[dict]]:
    """The OpenAPI path of a Flask rule and its path parameters (typed from the converters)."""
    params = []
    for converter, name in _RULE_ARG.findall(rule):
        integer = converter == "int"
        param = {"name": name, "in": "path", "required": True}
        if integer and name.endswith("_id"):
            param["description"] = f"the {name.removesuffix('_id')}'s id"
        param["schema"] = {"type": "integer" if integer else "string"}
        params.append(param)
    return _RULE_ARG.sub(lambda m: "{" + m.group(2) + "}", rule), params


def _query_params(model: type[BaseModel]) -> list[dict]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]


def _content(schema: Schema, media_type: str, refs: dict) -> dict:
    if isinstance(schema, type):
        schema = refs[(schema, "serialization")]
    return {media_type: {"schema": schema}}


def _operation(op: Operation, method: str, endpoint: str, params: list[dict], refs: dict) -> dict:
    name = endpoint.rsplit(".", 1)[-1]
    out: dict[str, Any] = {
        "operationId": op.operation_ids.get(method, name),
        "summary": op.summaries.get(method, op.summary),
        "tags": list(op.tags),
    }
    if op.description:
        out["description"] = op.description
    if op.security:
        out["security"] = [{op.security: []}]
    parameters = params + (_query_params(op.query) if op.query else [])
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        schema = refs[(op.body, "validation")]
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
    out["responses"] = {
        str(status): {"description": answer.description}
        | ({"content": _content(answer.schema, answer.media_type, refs)} if answer.schema else {})
        for status, answer in sorted(op.responses.items())
    }
    return out


def build(app: Flask) -> dict:
    """The OpenAPI document of every route of app; LookupError names an undescribed one."""
    routes = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if rule.endpoint == "static":
            continue
        op = getattr(app.view_functions[rule.endpoint], ATTRIBUTE, None)
        if op is None:
            raise LookupError(
                f"route {rule.rule} ({rule.endpoint}) has no schema: describe its view "
                "with grimbots.openapi.describe"
            )
        routes.append((rule, op))
    pairs = list(dict.fromkeys(pair for _, op in routes for pair in op.models()))
    refs, defs = models_json_schema(pairs, ref_template=REF_TEMPLATE)
    paths: dict[str, dict] = {}
    for rule, op in routes:
        path, params = _path(rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            item = paths.setdefault(path, {})
            item[method.lower()] = _operation(op, method, rule.endpoint, params, refs)
    return {
        "openapi": "3.1.0",
        "info": INFO,
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }


@cache
def document() -> dict:
    """The document of the app's routes (the same for every app: routes do not depend on
    settings), built once per process."""
    from grimbots.app import register_routes

    app = Flask("grimbots.openapi")
    register_routes(app)
    return build(app)


@bp.get("/openapi.json")
@describe(
    "This description",
    tags=["operations"],
    responses={200: Answer("OpenAPI 3.1", {"type": "object"})},
    operation_ids={"GET": "openapi"},
)
def openapi_json():
    return jsonify(document())
