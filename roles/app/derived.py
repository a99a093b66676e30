"""The app role's values derived from its knobs: worker unit instances, the Redis connections
its processes may open, the schema stamp that decides whether migrations run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

# Queues an RQ worker may serve (the tasks workers also drain tracking and marathon).
KNOWN_QUEUES = ("tasks", "gateway", "webhook", "tracking", "marathon")
REQUIRED_QUEUES = ("tasks", "gateway", "webhook")


def worker_instances(workers: Iterable[Mapping[str, Any]]) -> list[str]:
    """grimbots_workers as systemd instance names <queue>-<n> (grimbots-worker@<queue>-<n>)."""
    return [f"{w['queue']}-{n}" for w in workers for n in range(1, int(w["count"]) + 1)]


def redis_clients_needed(
    web_workers: int | str, workers: Iterable[Mapping[str, Any]], max_connections: int | str
) -> int:
    """The most Redis connections the app's processes may open: every Gunicorn worker, every RQ
    worker and its work horse, two pools each (state and queue), each pool bounded."""
    total_workers = sum(int(w["count"]) for w in workers)
    return (int(web_workers) + 2 * total_workers) * 2 * int(max_connections)


def schema_stamp(wheel_stamp: str, database_url: str) -> str:
    """What the app's schema was migrated for: the code (wheel set) and the database URL."""
    return hashlib.sha1(f"{wheel_stamp} {database_url}".encode()).hexdigest()  # noqa: S324


# The Jinja filters this role's templates and tasks use (the platform role's filter plugin
# collects every role's FILTERS; pyinfra renders with the same plugin).
FILTERS = {
    "grimbots_worker_instances": worker_instances,
    "grimbots_schema_stamp": schema_stamp,
}
