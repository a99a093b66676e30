"""The platform's roles, in one tuple: whose defaults the inventory loader layers under every
host's variables (lowest precedence) for both deploy tools and the lab tests. Which role a phase
applies to which group is said by each phase's playbook and pyinfra deploy."""

from __future__ import annotations

# Every role a deploy may apply; their defaults are loaded (lowest precedence) for every host.
ALL_ROLES = (
    "common",
    "firewall",
    "app",
    "patroni",
    "exporters",
    "monitoring",
    "haproxy",
    "redis_cluster",
    "queue_redis",
)
