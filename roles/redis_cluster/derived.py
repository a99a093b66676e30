"""The redis_cluster role's derived values: cluster-node-timeout from the one recovery knob."""

from __future__ import annotations

# Seconds a Redis Cluster replica spends between its master's PFAIL and its promotion: the
# failure reports spread by gossip (measured up to about 2 s), then the election waits 500 ms +
# up to 500 ms random + 1 s per rank, and the vote takes a round trip. Three seconds covers the
# best-ranked replica (molecule measured node timeout + 1.2-2.3 s); the app's cluster client
# needs about one more to refresh its slot map.
REDIS_CLUSTER_ELECTION_SECONDS = 3


def redis_cluster_node_timeout_ms(recovery_seconds: int | str) -> int:
    """cluster-node-timeout from the one knob: the most seconds until the cluster is ok again
    after a master's host dies (a master is flagged PFAIL after node-timeout, FAIL once most
    masters agree, then its replica is elected). At 8 s: 4000 ms (bounded below by 1000 ms:
    shorter flags healthy nodes on a busy host)."""
    budget = (int(recovery_seconds) - REDIS_CLUSTER_ELECTION_SECONDS - 1) * 1000
    return max(1000, budget)


# The Jinja filters this role's templates and tasks use (the platform role's filter plugin
# collects every role's FILTERS; pyinfra renders with the same plugin).
FILTERS = {
    "grimbots_redis_cluster_node_timeout_ms": redis_cluster_node_timeout_ms,
}
