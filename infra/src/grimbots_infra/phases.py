"""Which roles each phase applies, to which inventory group: read by both deploy tools' glue
(the playbooks list the same roles; tests/phaseN check what they deploy)."""

from __future__ import annotations

# Every role a deploy may apply; their defaults are loaded (lowest precedence) for every host.
ALL_ROLES = (
    "common",
    "app",
    "patroni",
    "exporters",
    "monitoring",
    "haproxy",
    "redis_cluster",
    "queue_redis",
)
