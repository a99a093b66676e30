"""The sellers' JSON admin API under /api: bots, funnels, pools, campaigns, stats.

Every request carries a seller's bearer token and every query is scoped by that seller: another
seller's object answers 404 (never 403), so ids do not leak. Every input is validated by the
pydantic schemas of its resource's module (which also describe the route in /openapi.json),
with a 400 naming the field, so nothing a caller sends can reach the database malformed (a NUL
byte or an over-long string would otherwise be a 500 on PostgreSQL).
"""

from __future__ import annotations

from flask import g, request

from grimbots.api import bots, campaigns, funnels, pools
from grimbots.api.common import bp
from grimbots.auth import bearer_token, seller_for_token
from grimbots.errors import error_response

__all__ = ["bp", "bots", "campaigns", "funnels", "pools"]


@bp.before_request
def _authenticate():
    token = bearer_token(request)
    seller_id = seller_for_token(token) if token else None
    if seller_id is None:
        response, status = error_response(401, "missing or invalid bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="grimbots"'
        return response, status
    g.seller_id = seller_id
    return None
