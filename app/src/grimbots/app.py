"""The Flask app factory."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from grimbots import metrics
from grimbots.bodylimit import BodyLimit
from grimbots.db import get_db
from grimbots.errors import register_error_handlers
from grimbots.logs import configure_logging
from grimbots.openapi import Answer, describe
from grimbots.proxies import TrustedProxies
from grimbots.redis_pool import get_pools
from grimbots.settings import Settings
from grimbots.webhook_wsgi import WebhookFastPath

# Telegram sends one update per request; a seller's admin call is small too.
MAX_CONTENT_LENGTH = 1024 * 1024


@describe(
    "Prometheus text (every process of the host)",
    tags=["operations"],
    responses={200: Answer("Prometheus exposition format", {"type": "string"}, "text/plain")},
    operation_ids={"GET": "metrics"},
)
def metrics_endpoint():
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


def register_routes(app: Flask) -> None:
    """Every route of the app; also what the OpenAPI document is built from."""
    from grimbots.api import bp as api_bp
    from grimbots.health import bp as health_bp
    from grimbots.openapi import bp as openapi_bp
    from grimbots.payments import bp as payments_bp
    from grimbots.tracking import bp as tracking_bp
    from grimbots.webhook import bp as webhook_bp

    for blueprint in (webhook_bp, payments_bp, tracking_bp, api_bp, health_bp, openapi_bp):
        app.register_blueprint(blueprint)
    app.add_url_rule("/metrics", "metrics_endpoint", metrics_endpoint, methods=["GET"])


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.config["GRIMBOTS_SETTINGS"] = settings
    app.json.sort_keys = False
    # The process-wide pools, built from the same settings the app was given.
    get_db(settings)
    get_pools(settings)

    # X-Forwarded-For is believed only from the configured proxies (none by default).
    app.wsgi_app = TrustedProxies(app.wsgi_app, settings.trusted_proxies)
    # Telegram's deliveries skip Flask's request machinery (the same intake, the same metrics).
    app.wsgi_app = WebhookFastPath(app.wsgi_app, MAX_CONTENT_LENGTH)
    # A chunked body over the limit is refused whole, like one with a Content-Length.
    app.wsgi_app = BodyLimit(app.wsgi_app, MAX_CONTENT_LENGTH)

    register_routes(app)

    @app.before_request
    def _start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response):
        rule = metrics.route_label(request.endpoint)
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        method = metrics.method_label(request.method)
        metrics.HTTP_REQUESTS.labels(rule, method, metrics.status_label(response.status_code)).inc()
        metrics.HTTP_LATENCY.labels(rule).observe(elapsed)
        return response

    register_error_handlers(app)
    return app


def settings_of(app: Flask) -> Settings:
    return app.config["GRIMBOTS_SETTINGS"]
