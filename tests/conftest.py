"""Shared fixtures for the lab suites (tests/phaseN): hosts over SSH, their variables, HTTP.

Hosts and variables come from the lab's Ansible inventory, read by ansible-core exactly as the
pyinfra deploys read it (grimbots_infra.inventory), so a test reads what the roles were given: the
Redis bound, the worker set, the secrets (to prove they never appear where they must not).
All traffic goes to the lab's containers only, with bounded timeouts.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import testinfra

import grimbots_lab as lab2
from grimbots_infra.inventory import ROOT, Inventory, load
from grimbots_infra.phases import ALL_ROLES
from grimbots_lab import KNOWN_HOSTS, Public

LAB_INVENTORY = ROOT / "inventory" / "lab"
# grimbots.seed.DEMO_BOT_TOKEN: the demo bot's token at the fake Telegram.
DEMO_BOT_TOKEN = "123456:DEMO-TOKEN"
VAULT_PASSWORD_FILE = LAB_INVENTORY / "vault-password.txt"


@pytest.fixture(scope="session")
def lab() -> Inventory:
    """The lab inventory with every host's resolved variables (vault included)."""
    return load(ALL_ROLES, str(LAB_INVENTORY))


def _ssh_host(variables: dict[str, Any], ssh_config: Path):
    return testinfra.get_host(
        f"ssh://{variables.get('ansible_user', 'root')}@{variables['ansible_host']}"
        f"?ssh_config={ssh_config}&timeout=30&controlpersist=120"
    )


@pytest.fixture(scope="session")
def ssh_config(tmp_path_factory, lab) -> Path:
    """An ssh_config for the lab: its key, and host keys checked against those lab.sh recorded."""
    key = ROOT / lab.hosts[lab.groups["all"][0]]["ansible_ssh_private_key_file"]
    path = tmp_path_factory.mktemp("ssh") / "config"
    path.write_text(
        "Host *\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking yes\n"
        f"  UserKnownHostsFile {KNOWN_HOSTS}\n"
        "  LogLevel ERROR\n"
        "  ConnectTimeout 10\n"
    )
    return path


@pytest.fixture(scope="session")
def lab_host(lab, ssh_config):
    """A factory: lab_host('app1') is a testinfra host over SSH."""
    cache: dict[str, Any] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = _ssh_host(lab.hosts[name], ssh_config)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def app_name(lab) -> str:
    """Phase 1 runs on the first host of the app group."""
    return lab.groups["app"][0]


@pytest.fixture(scope="session")
def app_host(lab_host, app_name):
    return lab_host(app_name)


@pytest.fixture(scope="session")
def app_vars(lab, app_name) -> dict[str, Any]:
    return lab.hosts[app_name]


@pytest.fixture(scope="session")
def app_url(app_vars) -> str:
    return f"http://{app_vars['ansible_host']}:{app_vars['grimbots_web_port']}"


@pytest.fixture(scope="session")
def telegram_url(lab) -> str:
    tg = lab.hosts[lab.groups["telegram"][0]]
    return f"http://{tg['ansible_host']}:{tg['platform_ports']['fake_telegram']}"


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One HTTP request to a lab host; (status, parsed JSON or text). Never raises on 4xx/5xx."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - lab URLs only
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(check, timeout: float, interval: float = 0.5):
    """Call check() until it returns a truthy value or the timeout passes; return the last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = check()
    return value


@pytest.fixture(scope="session")
def worker_instances(app_vars) -> list[str]:
    """grimbots_workers as instance names <queue>-<n>, exactly as the role expands them."""
    return [
        f"{w['queue']}-{n}"
        for w in app_vars["grimbots_workers"]
        for n in range(1, int(w["count"]) + 1)
    ]


@pytest.fixture(scope="session")
def demo_bot(app_host) -> dict:
    """The demo seller, funnel and bot, seeded (idempotently) on the deployed host."""
    out = app_host.check_output(f"{lab2.APP_CLI} seed-demo")
    return json.loads(out[out.index("{") :])


@pytest.fixture(scope="session")
def demo_webhook(app_host, demo_bot, telegram_url) -> str:
    """The demo bot's webhook as the fake Telegram holds it, after `set-webhooks` on the app host
    (the deploy's own step; the demo bot may have been seeded after it)."""
    app_host.check_output(f"{lab2.APP_CLI} set-webhooks")
    status, info = http("GET", f"{telegram_url}/bot{DEMO_BOT_TOKEN}/getWebhookInfo")
    assert status == 200 and info["ok"], info
    return info["result"]["url"]


@pytest.fixture(scope="session")
def secrets(app_vars) -> list[str]:
    """Every secret the vault gave the host."""
    values = [app_vars["grimbots_redis_password"], *app_vars["grimbots_gateway_secrets"].values()]
    values += [v for k, v in app_vars["grimbots_extra_env"].items() if "SECRET" in k]
    return [v for v in values if v]


@pytest.fixture(scope="session")
def lb_vars(lab) -> dict[str, Any]:
    return lab.hosts[lab.groups["lb"][0]]


@pytest.fixture(scope="session")
def lab_tls(lb_vars, tmp_path_factory) -> ssl.SSLContext:
    """A client context that trusts only the lab CA the role made on the lb host (as
    test_haproxy.py's module fixture `tls`, session-wide for these suites)."""
    ca = lab2.ssh(lb_vars, f"cat {lb_vars['haproxy_tls_dir']}/ca.crt", timeout=30)
    assert ca.returncode == 0 and "BEGIN CERTIFICATE" in ca.stdout, ca.stderr
    path = tmp_path_factory.mktemp("lab-ca") / "ca.crt"
    path.write_text(ca.stdout)
    context = ssl.create_default_context(cafile=str(path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.fixture(scope="session")
def public(lb_vars, lab_tls) -> Public:
    """https://<lb>:<haproxy_https_port>: what Telegram's webhook and the ads' clicks reach."""
    return Public(f"https://{lb_vars['ansible_host']}:{lb_vars['haproxy_https_port']}", lab_tls)
