"""/openapi.json: the description of every public endpoint (the committed openapi.json).

The fuzzing suite (tests/test_fuzz_http.py) generates requests from it and checks that every
route the app serves is described there, so the file cannot silently fall behind the code.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from flask import Blueprint, jsonify

bp = Blueprint("openapi", __name__)


@cache
def document() -> dict:
    return json.loads(resources.files("grimbots").joinpath("openapi.json").read_text("utf-8"))


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document())
