"""Fixtures of the phase-4 suites: Prometheus, Alertmanager and the fake Telegram of the lab,
the platform's public HTTPS URL, and scripts/check_promql.py's queries."""

from __future__ import annotations

import base64
import importlib.util
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import grimbots_lab as lab2

RULES = lab2.ROOT / "roles" / "monitoring" / "files" / "alert_rules.yml"


class Monitoring:
    """The monitoring host's HTTP APIs with the inventory's basic-auth credentials, and the
    messages Alertmanager sent to the lab's fake Telegram."""

    def __init__(self, lab):
        mon = lab.hosts[lab.groups["monitoring"][0]]
        self.address = mon["ansible_host"]
        self.prometheus_port = int(mon["monitoring_prometheus_port"])
        self.alertmanager_port = int(mon["monitoring_alertmanager_port"])
        token = f"{mon['monitoring_web_username']}:{mon['monitoring_web_password']}"
        self._auth = "Basic " + base64.b64encode(token.encode()).decode()
        self.chat_id = int(mon["monitoring_telegram_chat_id"])
        self.telegram = str(mon["monitoring_telegram_api_url"]).rstrip("/")

    def get(self, port: int, path: str, auth: bool = True) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://{self.address}:{port}{path}")
        if auth:
            req.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - lab address
                body = resp.read()
                return resp.status, json.loads(body) if body[:1] in (b"{", b"[") else body
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def prometheus(self, path: str) -> Any:
        status, body = self.get(self.prometheus_port, f"/api/v1/{path}")
        assert status == 200, (path, status)
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.prometheus("query?" + urllib.parse.urlencode({"query": expr}))["result"]

    def messages(self, since: float = 0.0) -> list[dict]:
        """sendMessage calls to the alert chat that reached the fake Telegram after `since`."""
        query = urllib.parse.urlencode({"method": "sendMessage", "chat_id": self.chat_id})
        with urllib.request.urlopen(f"{self.telegram}/_calls?{query}", timeout=5) as resp:  # noqa: S310
            calls = json.loads(resp.read())
        return [c for c in calls if c["received"] >= since and c["status"] == 200]


@pytest.fixture(scope="session")
def lab():
    return lab2.load_lab()


@pytest.fixture(scope="session")
def monitoring(lab) -> Monitoring:
    return Monitoring(lab)


@pytest.fixture(scope="session")
def rules() -> dict[str, dict]:
    """Every alerting rule of the one rule file, by name."""
    groups = yaml.safe_load(Path(RULES).read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"]}


@pytest.fixture(scope="session")
def check_promql() -> ModuleType:
    """scripts/check_promql.py, loaded from its file (a script, not a package): the one list of
    dashboard queries and the one evaluation `make lint` uses too."""
    path = lab2.ROOT / "scripts" / "check_promql.py"
    spec = importlib.util.spec_from_file_location("check_promql", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def prometheus_access(monitoring, lab) -> tuple[str, tuple[str, str]]:
    """The lab Prometheus' base URL and its basic-auth pair (check_promql.evaluate's form)."""
    mon = lab.hosts[lab.groups["monitoring"][0]]
    auth = (str(mon["monitoring_web_username"]), str(mon["monitoring_web_password"]))
    return f"http://{monitoring.address}:{monitoring.prometheus_port}", auth
