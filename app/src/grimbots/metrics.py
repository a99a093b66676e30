"""Prometheus metrics.

With PROMETHEUS_MULTIPROC_DIR set (the systemd units set it), Gunicorn workers and RQ workers
of one host write to one directory and `/metrics` on the web sums them, so counters incremented
in workers (messages sent, errors) are visible where Prometheus scrapes.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "grimbots_http_requests_total",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "grimbots_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
MESSAGES_RECEIVED = Counter(
    "grimbots_telegram_updates_received_total", "Telegram updates accepted by the webhook", ["kind"]
)
MESSAGES_SENT = Counter(
    "grimbots_telegram_messages_sent_total", "Telegram messages sent", ["method"]
)
TELEGRAM_ERRORS = Counter(
    "grimbots_telegram_errors_total", "Telegram API errors by type", ["error_type"]
)
UPDATE_PROCESSING = Histogram(
    "grimbots_update_processing_seconds",
    "Time to process one Telegram update in a worker",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DUPLICATES = Counter(
    "grimbots_duplicates_suppressed_total", "Duplicates stopped, by dedup layer", ["layer"]
)
DB_POOL_IN_USE = Gauge(
    "grimbots_db_pool_connections_in_use",
    "Database connections checked out",
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "grimbots_db_pool_max_connections",
    "Connections the database pools may open (pool size + overflow)",
    multiprocess_mode="livesum",
)
JOBS_FAILED = Counter("grimbots_jobs_failed_total", "RQ jobs that raised", ["queue", "function"])
OUTBOX_AMBIGUOUS = Counter(
    "grimbots_outbox_ambiguous_total",
    "Sends that may have reached Telegram without an answer: recorded, never repeated",
    ["reason"],
)
# What the reconcilers found on their last pass (one value per host: the most recent pass).
OUTBOX_STALE_ROWS = Gauge(
    "grimbots_outbox_stale_rows",
    "Outbox rows pending without a live claim past the reconciler's grace time",
    multiprocess_mode="mostrecent",
)
PAID_UNDELIVERED = Gauge(
    "grimbots_paid_undelivered_orders",
    "Payments paid with delivered_at empty past the reconciler's grace time",
    multiprocess_mode="mostrecent",
)
CAMPAIGNS_STALLED = Gauge(
    "grimbots_campaigns_stalled",
    "Running campaigns that made no progress past the reconciler's grace time",
    multiprocess_mode="mostrecent",
)
RECONCILED = Counter(
    "grimbots_reconciler_repaired_total",
    "Half-done work finished by a reconciler",
    ["reconciler"],
)
JOB_RETRIES = Counter(
    "grimbots_job_retries_total",
    "Job retries scheduled because a dependency was down (not counted against the job's budget)",
    ["reason"],
)
JOB_FAILURES = Counter(
    "grimbots_job_failures_total",
    "Jobs that ended in the failed registry after failing for another reason than an outage",
    ["queue", "function"],
)
JOBS_REQUEUED = Counter(
    "grimbots_jobs_requeued_total", "Started jobs of dead workers handed back to RQ", ["queue"]
)


# Label values come from fixed sets only: a value taken from a request (a method, an update
# type) would let any caller create series without bound, and a lone surrogate in one would
# make every later /metrics answer fail.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# Short, stable route names for the hot paths (dashboards and alert rules select on them);
# every other endpoint is labelled with its Flask endpoint name, itself a fixed set.
ROUTE_NAMES = {
    "webhook.telegram_webhook": "webhook",
    "payments.payment_webhook": "payment",
    "tracking.go": "go",
    "health.health": "health",
    "metrics_endpoint": "metrics",
    "openapi.openapi_json": "openapi",
}


def route_label(endpoint: str | None) -> str:
    if endpoint is None:
        return "unmatched"
    return ROUTE_NAMES.get(endpoint, endpoint)


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else "OTHER"


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


class RuntimeCollector:
    """Values read at scrape time: RQ queues and workers, Redis pools of this process."""

    def collect(self):
        from grimbots import activity, queues
        from grimbots.redis_pool import get_pools

        depth = GaugeMetricFamily(
            "grimbots_rq_queue_jobs", "Jobs waiting per queue", labels=["queue"]
        )
        workers = GaugeMetricFamily(
            "grimbots_rq_workers", "Workers listening per queue", labels=["queue"]
        )
        try:
            for name, info in queues.queue_overview().items():
                depth.add_metric([name], info["depth"])
                workers.add_metric([name], info["workers"])
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis is down
            log.warning("rq metrics unavailable: %s", exc)
        yield depth
        yield workers
        size = GaugeMetricFamily(
            "grimbots_redis_pool_max_connections", "Bound of the Redis pool", labels=["pool"]
        )
        used = GaugeMetricFamily(
            "grimbots_redis_pool_connections_in_use",
            "Redis connections in use (this process)",
            labels=["pool"],
        )
        for stat in get_pools().stats():
            size.add_metric([stat.name], stat.max_connections)
            used.add_metric([stat.name], stat.in_use)
        yield size
        yield used
        active = GaugeMetricFamily(
            "grimbots_active_users",
            f"Distinct Telegram users with an update processed in the last "
            f"{activity.WINDOW_MINUTES} minutes (HyperLogLog, about 1% error)",
        )
        try:
            active.add_metric([], activity.count())
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis is down
            log.warning("active users unavailable: %s", exc)
        else:
            yield active


def render() -> tuple[bytes, str]:
    """The /metrics body: all processes of the host in multiprocess mode, else this one."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    extra = CollectorRegistry()
    extra.register(RuntimeCollector())
    return generate_latest(registry) + generate_latest(extra), CONTENT_TYPE_LATEST
