"""The monitoring role's files rendered from the lab inventory, checked without a host: every job
the rules select lists every host of its groups, the checkers accept the files, Grafana's
provisioning matches the committed dashboards, and the preflight refuses bad inputs."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import bcrypt
import pytest
import yaml

from grimbots_infra import preflight, roles
from grimbots_infra.inventory import ROLES_DIR, ROOT, Inventory
from grimbots_infra.phases import ALL_ROLES
from grimbots_infra.render import render

LAB = ROOT / "inventory" / "lab"
FILES = ROLES_DIR / "monitoring" / "files"
EXPECTED_JOBS = {
    "node": ["app", "db", "lb", "redis", "monitoring"],
    "app": ["app"],
    "haproxy": ["lb"],
    "patroni": ["db"],
    "postgres": ["db"],
    "etcd": ["db"],
    "redis": ["redis"],
    "sentinel": ["redis"],
    "prometheus": ["monitoring"],
    "alertmanager": ["monitoring"],
}


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return Inventory(LAB, list(ALL_ROLES), LAB / "vault-password.txt")


@pytest.fixture(scope="module")
def mon(lab):
    # Monitoring is phase 4's: render at that phase (the front doors are the lb hosts then).
    return lab.vars(lab.group("monitoring")[0], {"platform_phase": 4})


@pytest.fixture(scope="module")
def prometheus_yml(mon) -> dict:
    return yaml.safe_load(render("monitoring", "prometheus.yml.j2", mon))


def _targets(job: dict) -> dict[str, list[str]]:
    return {c["labels"]["host"]: c["targets"] for c in job["static_configs"]}


def test_every_job_lists_every_host_of_its_groups_at_the_contracts_port(lab, mon, prometheus_yml):
    jobs = {j["job_name"]: j for j in prometheus_yml["scrape_configs"]}
    # blackbox: the front doors' HTTPS (phase 4: lb1), for the certificates' expiry.
    assert set(jobs) == set(EXPECTED_JOBS) | {"blackbox"}
    assert _targets(jobs["blackbox"]) == {"lb1": ["https://10.77.0.10:443/"]}
    ports = mon["platform_ports"]
    for name, groups in EXPECTED_JOBS.items():
        hosts = [h for g in groups for h in lab.group(g)]
        targets = _targets(jobs[name])
        assert sorted(targets) == sorted(hosts), name
        for host in hosts:
            address = lab.vars(host)["ansible_host"]
            if name in ("redis", "sentinel"):
                assert all(t.startswith(f"redis://{address}:") for t in targets[host])
            else:
                assert len(targets[host]) == 1 and targets[host][0].startswith(f"{address}:")
    assert _targets(jobs["app"])["app1"] == [f"10.77.0.11:{ports['app_web']}"]
    redis1 = _targets(jobs["redis"])["redis1"]
    assert redis1 == [f"redis://10.77.0.31:{p}" for p in [6379, *ports["redis_cluster"]]]


def test_the_rules_jobs_are_all_scraped(prometheus_yml):
    jobs = {j["job_name"] for j in prometheus_yml["scrape_configs"]}
    assert roles.module("monitoring").rule_jobs() <= jobs


def test_prometheus_authenticates_to_itself_and_alertmanager_with_a_password_file(
    prometheus_yml, mon
):
    auth = {
        "username": mon["monitoring_web_username"],
        "password_file": mon["monitoring_password_file"],
    }
    jobs = {j["job_name"]: j for j in prometheus_yml["scrape_configs"]}
    assert jobs["prometheus"]["basic_auth"] == auth
    assert jobs["alertmanager"]["basic_auth"] == auth
    assert prometheus_yml["alerting"]["alertmanagers"][0]["basic_auth"] == auth
    assert mon["monitoring_web_password"] not in render("monitoring", "prometheus.yml.j2", mon)


def test_the_web_configuration_holds_a_stable_bcrypt_hash_of_the_vault_password(mon):
    text = render("monitoring", "web.yml.j2", mon)
    users = yaml.safe_load(text)["basic_auth_users"]
    hashed = users[mon["monitoring_web_username"]]
    assert bcrypt.checkpw(mon["monitoring_web_password"].encode(), hashed.encode())
    assert render("monitoring", "web.yml.j2", mon) == text  # a second deploy changes nothing


def test_alertmanager_routes_by_severity_to_the_fake_telegram(mon):
    config = yaml.safe_load(render("monitoring", "alertmanager.yml.j2", mon))
    routes = {r["matchers"][0]: r["receiver"] for r in config["route"]["routes"]}
    assert routes == {
        'alertname="Watchdog"': "watchdog",
        'severity="page"': "page",
        'severity="ticket"': "ticket",
        'severity="none"': "blackhole",
    }
    receivers = {r["name"]: r for r in config["receivers"]}
    telegram = receivers["page"]["telegram_configs"][0]
    assert telegram["api_url"] == mon["grimbots_telegram_api_base"]
    assert telegram["chat_id"] == int(mon["monitoring_telegram_chat_id"])
    severities = set(re.findall(r"severity: (\w+)", (FILES / "alert_rules.yml").read_text()))
    assert severities == {"page", "ticket", "none"}
    host_down = config["inhibit_rules"][0]
    assert host_down["equal"] == ["host"]
    assert 'alertname="InstanceDown"' in host_down["source_matchers"]


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool comes with make services")
def test_promtool_accepts_the_rendered_configuration(mon, tmp_path):
    text = render("monitoring", "prometheus.yml.j2", mon)
    text = text.replace(
        f"{mon['monitoring_rules_dir']}/alert_rules.yml", str(FILES / "alert_rules.yml")
    )
    (tmp_path / "prometheus.yml").write_text(text)
    (tmp_path / "web.yml").write_text(render("monitoring", "web.yml.j2", mon))
    for args in (["check", "config"], ["check", "web-config"]):
        name = "prometheus.yml" if args[1] == "config" else "web.yml"
        result = subprocess.run(
            ["promtool", *args, str(tmp_path / name)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("amtool"), reason="amtool comes with make services")
def test_amtool_accepts_the_rendered_alertmanager_configuration(mon, tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(render("monitoring", "alertmanager.yml.j2", mon))
    result = subprocess.run(
        ["amtool", "check-config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_datasources_carry_the_uids_the_dashboards_query(mon):
    provisioned = yaml.safe_load(render("monitoring", "grafana-datasources.yml.j2", mon))
    uids = {d["uid"]: d for d in provisioned["datasources"]}
    assert set(uids) == {"prometheus", "alertmanager"}
    assert uids["prometheus"]["jsonData"]["alertmanagerUid"] == "alertmanager"
    used = set()
    for path in (FILES / "dashboards").glob("*.json"):
        used |= set(
            re.findall(r'"uid": "([^"]+)"', json.dumps(json.loads(path.read_text())["panels"]))
        )
    assert used and used <= set(uids), used


def test_grafana_gets_every_committed_dashboard(mon):
    provider = yaml.safe_load(render("monitoring", "grafana-dashboards.yml.j2", mon))["providers"][
        0
    ]
    directory = provider["options"]["path"]
    manifest = mon["monitoring_manifest"]["files"]
    installed = {Path(f["dest"]).name for f in manifest if f["dest"].startswith(directory + "/")}
    committed = {p.name for p in (FILES / "dashboards").glob("*.json")}
    assert installed == committed


def test_the_lab_skips_grafana_and_production_enables_it(mon):
    assert mon["monitoring_grafana_enabled"] is False
    production = yaml.safe_load(
        (ROOT / "inventory/production/group_vars/monitoring.yml").read_text()
    )
    assert production["monitoring_grafana_enabled"] is True


def test_the_lab_monitoring_host_passes_the_preflight(mon):
    assert preflight.check(["monitoring"], preflight.from_host_vars(mon)) == []


def test_preflight_refuses_a_missing_token_without_showing_it(mon):
    values = {k: mon[k] for k in mon if k.startswith("monitoring_") or k == "groups"}
    values["monitoring_telegram_bot_token"] = "not-a-token"
    inputs = preflight.Inputs("mon1", values.__getitem__, lambda name: None)
    (problem,) = preflight.role_check("monitoring")(inputs)
    assert "monitoring_telegram_bot_token=(secret)" in problem and "not-a-token" not in problem


def test_preflight_refuses_rules_whose_job_nobody_scrapes(mon):
    values = {k: mon[k] for k in mon if k.startswith("monitoring_") or k == "groups"}
    values["monitoring_scrape_jobs"] = [
        j for j in mon["monitoring_scrape_jobs"] if j["name"] != "etcd"
    ]
    inputs = preflight.Inputs("mon1", values.__getitem__, lambda name: None)
    (problem,) = preflight.role_check("monitoring")(inputs)
    assert "etcd" in problem and "monitoring_scrape_jobs" in problem


def test_every_scraped_exporter_listens_where_prometheus_looks(lab, prometheus_yml):
    jobs = {j["job_name"]: j for j in prometheus_yml["scrape_configs"]}
    for host, targets in _targets(jobs["node"]).items():
        args = render("exporters", "node-exporter.default.j2", lab.vars(host))
        assert f"--web.listen-address={targets[0]}" in args, host
    for host, targets in _targets(jobs["postgres"]).items():
        variables = lab.vars(host)
        assert variables["exporters_postgres"] is True
        text = render("exporters", "postgres-exporter.default.j2", variables)
        assert f"--web.listen-address={targets[0]}" in text
        assert variables["exporters_postgres_password"] not in text  # read from a file
    redis_job = jobs["redis"]["static_configs"][0]
    variables = lab.vars(redis_job["labels"]["host"])
    args = render("exporters", "redis-exporter.default.j2", variables)
    assert f"--web.listen-address={redis_job['labels']['__exporter__']}" in args


def test_the_lab_db_hosts_pass_the_exporters_preflight(lab):
    for host in lab.group("db") + lab.group("app"):
        assert preflight.check(["exporters"], preflight.from_host_vars(lab.vars(host))) == []


def test_redis_exporter_knows_the_password_of_every_password_protected_target(lab, prometheus_yml):
    jobs = {j["job_name"]: j for j in prometheus_yml["scrape_configs"]}
    for config, sentinel in zip(
        jobs["redis"]["static_configs"], jobs["sentinel"]["static_configs"], strict=True
    ):
        variables = lab.vars(config["labels"]["host"])
        assert variables["exporters_redis_auth"] is True
        passwords = json.loads(render("exporters", "redis-exporter-passwords.json.j2", variables))
        assert sorted(passwords) == sorted(config["targets"] + sentinel["targets"])
        assert set(passwords.values()) == {variables["grimbots_redis_password"]}
        args = render("exporters", "redis-exporter.default.j2", variables)
        assert f"--redis.password-file={variables['exporters_redis_password_file']}" in args
        assert variables["grimbots_redis_password"] not in args
