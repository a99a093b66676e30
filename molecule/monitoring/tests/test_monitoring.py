"""The exporters and monitoring roles on one container: Prometheus and Alertmanager run behind
basic auth, load every rule of the one rule file, and scrape themselves and node_exporter."""

import json
import os
import time
from pathlib import Path

import testinfra.utils.ansible_runner
import yaml

from grimbots_infra.inventory import platform_ports

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("monitoring")

# The platform contract's ports as the converge got them (molecule's inventory).
PORTS = platform_ports(os.environ["MOLECULE_INVENTORY_FILE"])

ADDRESS = "10.79.0.41"
AUTH = "monitoring:molecule-monitoring-0123456789"
CHAT_ID = -1009000000001
PROMETHEUS = f"http://{ADDRESS}:{PORTS['prometheus']}"
ALERTMANAGER = f"http://{ADDRESS}:{PORTS['alertmanager']}"
# prepare.yml's fake Telegram, on the container's loopback.
TELEGRAM = f"http://127.0.0.1:{PORTS['fake_telegram']}"
RULES = Path(__file__).resolve().parents[3] / "roles" / "monitoring" / "files" / "alert_rules.yml"


def _status(host, url: str, auth: bool) -> str:
    user = f"-u {AUTH} " if auth else ""
    return host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {user}{url}")


def _api(host, path: str) -> dict:
    return json.loads(
        host.check_output(f"curl -sf --max-time 5 -u {AUTH} {PROMETHEUS}/api/v1/{path}")
    )


def test_prometheus_and_alertmanager_run_and_are_enabled(host):
    for unit in ("prometheus", "prometheus-alertmanager"):
        service = host.service(unit)
        assert service.is_running, unit
        assert service.is_enabled, unit


def test_ready_answers_200_with_the_password_and_401_without(host):
    for base in (PROMETHEUS, ALERTMANAGER):
        url = f"{base}/-/ready"
        assert _status(host, url, auth=True) == "200", base
        assert _status(host, url, auth=False) == "401", base


def test_every_rule_of_the_rule_file_is_loaded(host):
    expected = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    groups = _api(host, "rules")["data"]["groups"]
    loaded = [r["name"] for g in groups for r in g["rules"]]
    assert len(loaded) == expected, loaded


def test_prometheus_scrapes_itself_alertmanager_and_node_exporter(host):
    deadline = time.monotonic() + 90
    health = {}
    while time.monotonic() < deadline:
        targets = _api(host, "targets?state=active")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if all(health.get(job) == "up" for job in ("prometheus", "alertmanager", "node")):
            break
        time.sleep(3)
    for job in ("prometheus", "alertmanager", "node"):
        assert health.get(job) == "up", health
    assert set(health) == {"prometheus", "alertmanager", "node"}, health


def test_node_exporter_listens_on_the_hosts_address_only(host):
    assert host.service("prometheus-node-exporter").is_running
    assert host.socket(f"tcp://{ADDRESS}:{PORTS['node_exporter']}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORTS['node_exporter']}").is_listening


def test_prometheus_sends_alerts_to_alertmanager_with_the_password(host):
    deadline = time.monotonic() + 90
    names: list[str] = []
    while time.monotonic() < deadline:
        alerts = json.loads(
            host.check_output(f"curl -sf --max-time 5 -u {AUTH} {ALERTMANAGER}/api/v2/alerts")
        )
        names = [a["labels"]["alertname"] for a in alerts]
        if "Watchdog" in names:
            break
        time.sleep(3)
    assert "Watchdog" in names, names


def test_the_watchdog_reaches_the_telegram_receiver(host):
    """Alertmanager's own Telegram integration posts to the fake Telegram (prepare.yml)."""
    deadline = time.monotonic() + 120
    texts: list[str] = []
    while time.monotonic() < deadline:
        calls = json.loads(
            host.check_output(
                f"curl -sf --max-time 5 '{TELEGRAM}/_calls?method=sendMessage&chat_id={CHAT_ID}'"
            )
        )
        texts = [str(c.get("params", {}).get("text", "")) for c in calls]
        if any("Watchdog" in t for t in texts):
            break
        time.sleep(3)
    assert any("Watchdog" in t for t in texts), texts
    assert all(c.get("status") == 200 for c in calls), calls


def test_secrets_are_not_world_readable(host):
    for path in (
        "/etc/prometheus/web.yml",
        "/etc/prometheus/alertmanager.yml",
        "/etc/prometheus/monitoring-password",
    ):
        f = host.file(path)
        assert f.mode == 0o640, path
        assert (f.user, f.group) == ("root", "prometheus"), path
    assert "molecule-monitoring" not in host.file("/etc/prometheus/web.yml").content_string


def test_retention_and_listen_address_come_from_the_defaults(host):
    args = host.file("/etc/default/prometheus").content_string
    assert "--storage.tsdb.retention.time=15d" in args
    assert "--storage.tsdb.retention.size=8GB" in args
    assert host.socket(f"tcp://{ADDRESS}:{PORTS['prometheus']}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORTS['prometheus']}").is_listening


def test_postgres_exporter_logs_in_as_a_pg_monitor_only_role(host):
    role = host.check_output(
        'runuser -u postgres -- psql -XAtc "SELECT rolsuper, rolcreaterole, rolcreatedb,'
        " pg_has_role('grimbots_monitor', 'pg_monitor', 'member') FROM pg_roles"
        " WHERE rolname = 'grimbots_monitor'\""
    )
    assert role == "f|f|f|t"
    deadline = time.monotonic() + 30
    up = ""
    while time.monotonic() < deadline:
        metrics = host.run(
            f"curl -sf --max-time 5 http://{ADDRESS}:{PORTS['postgres_exporter']}/metrics"
        ).stdout
        up = next((line for line in metrics.splitlines() if line.startswith("pg_up ")), "")
        if up == "pg_up 1":
            break
        time.sleep(2)
    assert up == "pg_up 1", up
    assert (
        "molecule-exporter"
        not in host.file("/etc/default/prometheus-postgres-exporter").content_string
    )
