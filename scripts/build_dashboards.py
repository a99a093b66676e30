"""Generate the Grafana dashboards as code (Grafana's Foundation SDK) into committed JSON.

    python scripts/build_dashboards.py           # write roles/monitoring/files/dashboards/*.json
    python scripts/build_dashboards.py --check   # fail when the committed JSON is out of step

Every query here uses the scrape jobs of the alert rules (roles/monitoring/files/alert_rules.yml)
and the Prometheus datasource whose uid the monitoring role provisions (`prometheus`).
`--queries` prints every expression, one per line, for checking against a live Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUT = Path(__file__).resolve().parent.parent / "roles" / "monitoring" / "files" / "dashboards"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
RATE = "$__rate_interval"
APP = '{job="app"}'


def query(expr: str, legend: str = "", ref: str = "A") -> Dataquery:
    q = Dataquery().expr(expr).datasource(PROMETHEUS).ref_id(ref)
    return q.legend_format(legend) if legend else q


def series(title: str, unit: str, *queries: tuple[str, str], width: int = 12) -> Timeseries:
    panel = Timeseries().title(title).unit(unit).datasource(PROMETHEUS).span(width).height(8)
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(query(expr, legend, ref))
    return panel


def stat(title: str, unit: str, expr: str, width: int = 6) -> Stat:
    return (
        Stat()
        .title(title)
        .unit(unit)
        .datasource(PROMETHEUS)
        .span(width)
        .height(4)
        .with_target(query(expr))
    )


def latency(job: str, route_filter: str) -> list[tuple[str, str]]:
    bucket = f'grimbots_http_request_duration_seconds_bucket{{job="{job}"{route_filter}}}'
    return [
        (f"histogram_quantile({q}, sum by (le) (rate({bucket}[{RATE}])))", f"p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]


def dashboard(uid: str, title: str, *parts) -> Dashboard:
    board = (
        Dashboard(title)
        .uid(uid)
        .tags(["grimbots", "generated"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
    )
    for part in parts:
        board = board.with_row(part) if isinstance(part, Row) else board.with_panel(part)
    return board


def overview() -> Dashboard:
    return dashboard(
        "grimbots-overview",
        "GrimBots: overview",
        stat(
            "Requests/s", "reqps", f'sum(rate(grimbots_http_requests_total{{job="app"}}[{RATE}]))'
        ),
        stat(
            "5xx ratio",
            "percentunit",
            f'sum(rate(grimbots_http_requests_total{{job="app",status=~"5.."}}[{RATE}]))'
            f' / clamp_min(sum(rate(grimbots_http_requests_total{{job="app"}}[{RATE}])), 1e-9)',
        ),
        stat("Jobs waiting", "short", 'sum(grimbots_rq_queue_jobs{job="app"})'),
        stat("Targets down", "short", "count(up == 0) or vector(0)"),
        series(
            "Requests/s by route",
            "reqps",
            (
                f'sum by (route) (rate(grimbots_http_requests_total{{job="app"}}[{RATE}]))',
                "{{route}}",
            ),
        ),
        series("Latency (all routes)", "s", *latency("app", "")),
        series(
            "Errors/s",
            "reqps",
            (
                f'sum(rate(grimbots_http_requests_total{{job="app",status=~"5.."}}[{RATE}]))',
                "HTTP 5xx",
            ),
            (
                f'sum by (error_type) (rate(grimbots_telegram_errors_total{{job="app"}}[{RATE}]))',
                "Telegram {{error_type}}",
            ),
        ),
        series(
            "Active users (last 5 minutes)",
            "short",
            # Every app node reads the same shared count: max, not sum.
            ('max(grimbots_active_users{job="app"})', "distinct Telegram users"),
        ),
        series(
            "Updates accepted/s",
            "reqps",
            (
                "sum by (kind) "
                f'(rate(grimbots_telegram_updates_received_total{{job="app"}}[{RATE}]))',
                "{{kind}}",
            ),
        ),
        series(
            "Queue sizes",
            "short",
            ('sum by (queue) (grimbots_rq_queue_jobs{job="app"})', "{{queue}}"),
        ),
        series(
            "Database connections",
            "short",
            (
                'sum by (instance) (grimbots_db_pool_connections_in_use{job="app"})',
                "pool in use {{instance}}",
            ),
            ('sum by (instance) (pg_stat_database_numbackends{job="postgres"})', "{{instance}}"),
        ),
        series(
            "Redis memory",
            "bytes",
            ('redis_memory_used_bytes{job=~"redis|sentinel"}', "{{instance}}"),
        ),
    )


def app() -> Dashboard:
    return dashboard(
        "grimbots-app",
        "GrimBots: app and RQ",
        Row("Web"),
        series("Webhook latency", "s", *latency("app", ',route="webhook"')),
        series(
            "Responses/s by status",
            "reqps",
            (
                f'sum by (status) (rate(grimbots_http_requests_total{{job="app"}}[{RATE}]))',
                "{{status}}",
            ),
        ),
        series(
            "Duplicates stopped/s by layer",
            "reqps",
            (
                f'sum by (layer) (rate(grimbots_duplicates_suppressed_total{{job="app"}}[{RATE}]))',
                "{{layer}}",
            ),
        ),
        series(
            "Redis pool in use",
            "short",
            (
                'sum by (instance, pool) (grimbots_redis_pool_connections_in_use{job="app"})',
                "{{instance}} {{pool}}",
            ),
        ),
        Row("Workers"),
        series(
            "Jobs waiting", "short", (f"sum by (queue) (grimbots_rq_queue_jobs{APP})", "{{queue}}")
        ),
        series(
            "Workers per queue",
            "short",
            (f"max by (queue) (grimbots_rq_workers{APP})", "{{queue}}"),
        ),
        series(
            "Update processing p95",
            "s",
            (
                "histogram_quantile(0.95, sum by (le) "
                f'(rate(grimbots_update_processing_seconds_bucket{{job="app"}}[{RATE}])))',
                "p95",
            ),
        ),
        series(
            "Failed jobs/s",
            "reqps",
            (
                f'sum by (queue, function) (rate(grimbots_jobs_failed_total{{job="app"}}[{RATE}]))',
                "{{queue}} {{function}}",
            ),
        ),
        series(
            "Telegram messages sent/s",
            "reqps",
            (
                "sum by (method) "
                f'(rate(grimbots_telegram_messages_sent_total{{job="app"}}[{RATE}]))',
                "{{method}}",
            ),
        ),
    )


def database() -> Dashboard:
    return dashboard(
        "grimbots-database",
        "GrimBots: PostgreSQL, Patroni, etcd",
        stat("Leader", "short", 'sum(patroni_primary{job="patroni"})'),
        stat("Sync standbys", "short", 'sum(patroni_sync_standby{job="patroni"})'),
        stat("etcd members up", "short", 'count(up{job="etcd"} == 1)'),
        stat("Timeline", "short", 'max(patroni_postgres_timeline{job="patroni"})'),
        series(
            "Replay lag (bytes behind the leader)",
            "bytes",
            (
                'max(patroni_xlog_location{job="patroni"}) - on () group_right '
                'patroni_xlog_replayed_location{job="patroni"}',
                "{{instance}}",
            ),
        ),
        series(
            "Transactions/s",
            "ops",
            (
                f'sum by (instance) (rate(pg_stat_database_xact_commit{{job="postgres"}}[{RATE}]))',
                "{{instance}}",
            ),
        ),
        series(
            "Backends",
            "short",
            ('sum by (instance) (pg_stat_database_numbackends{job="postgres"})', "{{instance}}"),
        ),
        series(
            "etcd leader changes",
            "short",
            ('max(etcd_server_leader_changes_seen_total{job="etcd"})', "leader changes"),
        ),
    )


def redis() -> Dashboard:
    return dashboard(
        "grimbots-redis",
        "GrimBots: Redis Cluster and Sentinel",
        stat("Cluster state ok", "short", 'min(redis_cluster_state{job="redis"})'),
        stat("Slots ok", "short", 'min(redis_cluster_slots_ok{job="redis"})'),
        stat(
            "Healthy Sentinels", "short", 'min(redis_sentinel_master_ok_sentinels{job="sentinel"})'
        ),
        stat("Queue replicas", "short", 'min(redis_sentinel_master_ok_slaves{job="sentinel"})'),
        series("Memory used", "bytes", ('redis_memory_used_bytes{job="redis"}', "{{instance}}")),
        series(
            "Commands/s",
            "ops",
            (f'rate(redis_commands_processed_total{{job="redis"}}[{RATE}])', "{{instance}}"),
        ),
        series("Clients", "short", ('redis_connected_clients{job="redis"}', "{{instance}}")),
        series(
            "Replication offset lag",
            "bytes",
            (
                # One primary offset against each of its replicas (many per instance).
                'redis_master_repl_offset{job="redis"} - on (instance) group_right '
                'redis_connected_slave_offset_bytes{job="redis"}',
                "{{instance}} {{slave_ip}}",
            ),
        ),
    )


def haproxy() -> Dashboard:
    return dashboard(
        "grimbots-haproxy",
        "GrimBots: HAProxy",
        stat(
            "App servers up",
            "short",
            'min(haproxy_backend_active_servers{job="haproxy",proxy="app"})',
        ),
        series(
            "Requests/s by frontend",
            "reqps",
            (
                "sum by (proxy) "
                f'(rate(haproxy_frontend_http_requests_total{{job="haproxy"}}[{RATE}]))',
                "{{proxy}}",
            ),
        ),
        series(
            "Responses/s by code",
            "reqps",
            (
                "sum by (code) "
                f'(rate(haproxy_backend_http_responses_total{{job="haproxy",proxy="app"}}[{RATE}]))',
                "{{code}}",
            ),
        ),
        series(
            "Retries and redispatches/s",
            "reqps",
            (
                f'sum(rate(haproxy_backend_retry_warnings_total{{job="haproxy"}}[{RATE}]))',
                "retries",
            ),
            (
                f'sum(rate(haproxy_backend_redispatch_warnings_total{{job="haproxy"}}[{RATE}]))',
                "redispatches",
            ),
        ),
        series(
            "Current sessions per server",
            "short",
            ('haproxy_server_current_sessions{job="haproxy",proxy="app"}', "{{server}}"),
        ),
    )


def hosts() -> Dashboard:
    return dashboard(
        "grimbots-hosts",
        "GrimBots: hosts",
        series(
            "CPU busy",
            "percentunit",
            (
                "1 - avg by (instance) "
                f'(rate(node_cpu_seconds_total{{job="node",mode="idle"}}[{RATE}]))',
                "{{instance}}",
            ),
        ),
        series(
            "Memory available",
            "percentunit",
            (
                'node_memory_MemAvailable_bytes{job="node"}'
                ' / node_memory_MemTotal_bytes{job="node"}',
                "{{instance}}",
            ),
        ),
        series(
            "Disk free",
            "percentunit",
            (
                'node_filesystem_avail_bytes{job="node",fstype!~"tmpfs|overlay|squashfs"}'
                ' / node_filesystem_size_bytes{job="node",fstype!~"tmpfs|overlay|squashfs"}',
                "{{instance}} {{mountpoint}}",
            ),
        ),
        series(
            "Network received",
            "Bps",
            (
                f'rate(node_network_receive_bytes_total{{job="node",device!="lo"}}[{RATE}])',
                "{{instance}} {{device}}",
            ),
        ),
    )


DASHBOARDS = {
    "overview": overview,
    "app": app,
    "database": database,
    "redis": redis,
    "haproxy": haproxy,
    "hosts": hosts,
}


def render(build) -> str:
    return json.dumps(build().build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def expressions(doc: dict) -> list[str]:
    """Every Prometheus expression of a dashboard's panels."""
    return [t["expr"] for p in doc.get("panels", []) for t in p.get("targets", []) if "expr" in t]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON differs")
    parser.add_argument("--queries", action="store_true", help="print every query, one a line")
    args = parser.parse_args()
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / f"{name}.json"
        text = render(build)
        if args.queries:
            print("\n".join(expressions(json.loads(text))))
        elif args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check:
        if stale:
            print(f"dashboards out of step with the code: {', '.join(stale)}")
            print("run: python scripts/build_dashboards.py, and commit the JSON")
            return 1
        print(f"dashboards: {len(DASHBOARDS)} in step with scripts/build_dashboards.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
