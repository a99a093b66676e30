"""Derived values for the roles' templates and tasks, from grimbots_infra.derive (the same
functions pyinfra, the preflight checks and the lab tests import)."""

from __future__ import annotations

import posixpath

from grimbots_infra import derive, firewall


def preseed_directories(items: list[dict]) -> list[dict]:
    """The directories of a manifest's preseed files (root's, 0755), for grimbots_files."""
    paths = dict.fromkeys(posixpath.dirname(str(i["dest"])) for i in items)
    return [{"path": p, "owner": "root", "group": "root", "mode": "0755"} for p in paths]


class FilterModule:
    """grimbots_* filters: one implementation of every value derived from a knob."""

    def filters(self) -> dict:
        return {
            "grimbots_patroni_timings": derive.patroni_timings,
            "grimbots_failover_bound": derive.failover_bound,
            "grimbots_worker_instances": derive.worker_instances,
            "grimbots_postgres_url": derive.postgres_url,
            "grimbots_etcd_endpoints": derive.etcd_endpoints,
            "grimbots_schema_stamp": derive.schema_stamp,
            "grimbots_addresses": derive.addresses,
            "grimbots_bcrypt": derive.bcrypt_hash,
            "grimbots_haproxy_check_timings": derive.haproxy_check_timings,
            "grimbots_redis_cluster_node_timeout_ms": derive.redis_cluster_node_timeout_ms,
            "grimbots_sentinel_timings": derive.sentinel_timings,
            "grimbots_firewall_ports": firewall.ports,
            "grimbots_firewall_rules": firewall.rules,
            "grimbots_preseed_directories": preseed_directories,
        }
