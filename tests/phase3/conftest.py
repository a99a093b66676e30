"""Fixtures of the phase-3 suites: the public HTTPS URL (HAProxy) trusted through the lab CA,
HAProxy's server table, lab hosts killed and started again as containers, Telegram's side of the
webhook (every update delivered again until it is answered 200) and the welcomes the fake
Telegram recorded. Every call has a timeout and every wait a bound.

The helpers are fixtures (not imported from this file), so each suite gets them the way pytest
resolves conftest files, whatever other conftest.py pytest loaded first.
"""

from __future__ import annotations

import base64
import csv
import http.client
import io
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

import grimbots_lab as lab2
from grimbots_lab import Answer, Public, start_update

# lab/lab.sh names each host's container after its inventory name.
CONTAINER_PREFIX = "grimbots-lab-"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# The Bot API methods a welcome is sent with (grimbots.funnel.send_welcome: media or text).
WELCOME_METHODS = frozenset({"sendPhoto", "sendVideo", "sendMessage"})


@dataclass
class Attempt:
    """One delivery of an update: the first (number 0) or a redelivery."""

    update_id: int
    number: int
    answer: Answer


class Telegram:
    """Delivers updates to the demo bot's webhook on the public URL as Telegram does: an update
    not answered 200 (an error status, or no answer within ``timeout``) is delivered again,
    the same bytes, ``pause`` seconds later, until it is answered 200 or ``deadline`` (monotonic,
    may be moved by the caller) passes. Every attempt is recorded."""

    MAX_ATTEMPTS = 500

    def __init__(
        self,
        public: Public,
        bot: dict,
        deadline: float,
        timeout: float = 10.0,
        pause: float = 1.0,
    ):
        self.public = public
        self.path = f"/webhook/telegram/{bot['bot_id']}"
        self.headers = {"Content-Type": "application/json", SECRET_HEADER: bot["webhook_secret"]}
        self.deadline = deadline
        self.timeout = timeout
        self.pause = pause
        self._lock = threading.Lock()
        self._attempts: list[Attempt] = []

    start_update = staticmethod(start_update)  # grimbots_lab's

    def deliver(self, update: dict) -> bool:
        """True once the update was answered 200; False if the deadline came first."""
        body = json.dumps(update).encode()
        for number in range(self.MAX_ATTEMPTS):
            if time.monotonic() >= self.deadline:
                break
            answer = self.public.request("POST", self.path, body, self.headers, self.timeout)
            with self._lock:
                self._attempts.append(Attempt(update["update_id"], number, answer))
            if answer.status == 200:
                return True
            time.sleep(self.pause)
        return False

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    def during(self, start: float, end: float, first_only: bool = False) -> list[Attempt]:
        """Attempts in flight at any moment of [start, end] (monotonic); with ``first_only``,
        first deliveries sent within it."""
        if first_only:
            return [a for a in self.attempts if a.number == 0 and start <= a.answer.started <= end]
        return [a for a in self.attempts if a.answer.started <= end and a.answer.ended >= start]

    @staticmethod
    def failed(attempts: list[Attempt]) -> list[Attempt]:
        return [a for a in attempts if a.answer.status != 200]

    @staticmethod
    def summary(attempts: list[Attempt], limit: int = 8) -> str:
        """'status or error x count' of failed attempts, most frequent first."""
        counts: dict[str, int] = {}
        for a in attempts:
            key = str(a.answer.status) if a.answer.status else a.answer.error or "no answer"
            counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
        return ", ".join(f"{k} x{n}" for k, n in ranked) or "none"


def parse_stat(text: str) -> list[dict[str, str]]:
    """Rows of HAProxy's `show stat` CSV (the stats page's `;csv` export is the same table):
    a header line '# pxname,svname,...' then one line per frontend, backend and server."""
    text = text.lstrip()
    if text.startswith("#"):
        text = text[1:].lstrip()
    return [dict(row) for row in csv.DictReader(io.StringIO(text)) if row.get("pxname")]


class HAProxy:
    """The load balancer's server table and reloads. The table is read from the stats page's
    CSV export on the stats port (basic auth): the same columns as `show stat` on the runtime
    socket, but cheap enough to poll every 0.2 s, where one SSH round trip per poll is not."""

    def __init__(self, lb: dict[str, Any]):
        self.lb = lb
        self.url = f"http://{lb['ansible_host']}:{lb['haproxy_stats_port']}/stats;csv"
        token = base64.b64encode(
            f"{lb['haproxy_stats_user']}:{lb['haproxy_stats_password']}".encode()
        ).decode()
        self.headers = {"Authorization": f"Basic {token}"}

    def stat(self, timeout: float = 2.0) -> list[dict[str, str]] | None:
        """The whole table; None when the stats page does not answer."""
        req = urllib.request.Request(self.url, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - lab
                return parse_stat(resp.read().decode())
        except (OSError, http.client.HTTPException, ValueError):
            return None

    def servers(self, backend: str = "app") -> dict[str, dict[str, str]]:
        """Server name -> its row, for one backend ({} when the stats page does not answer)."""
        return {
            row["svname"]: row
            for row in self.stat() or []
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def status(self, server: str, backend: str = "app") -> str:
        """'UP', 'UP 1/2' (failing checks), 'DOWN', 'DOWN 1/2' (passing checks), 'MAINT'...;
        '' when unknown."""
        return self.servers(backend).get(server, {}).get("status", "")

    def reload(self) -> subprocess.CompletedProcess:
        return lab2.ssh(self.lb, "systemctl reload haproxy", timeout=60)


def ssh_answers(variables: dict[str, Any]) -> bool:
    try:
        return lab2.ssh(variables, "true", timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


class Containers:
    """Lab hosts as containers: `docker kill` (SIGKILL to the whole host: no clean stop, as a
    power cut) and `docker start` (same address; systemd starts the enabled services again)."""

    def __init__(self, lab):
        self.lab = lab

    @staticmethod
    def name(host: str) -> str:
        return CONTAINER_PREFIX + host

    def _docker(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)

    def running(self, host: str) -> bool:
        run = self._docker("inspect", "-f", "{{.State.Running}}", self.name(host))
        return run.returncode == 0 and run.stdout.strip() == "true"

    def kill(self, host: str) -> float:
        """Kill the host; time.monotonic() when docker reported it done."""
        run = self._docker("kill", self.name(host))
        assert run.returncode == 0, f"docker kill {self.name(host)}: {run.stderr}"
        return time.monotonic()

    def start(self, host: str, timeout: float = 120) -> float:
        """Start the host (nothing happens if it runs) and wait, at most ``timeout`` seconds,
        until its sshd answers; the seconds that took."""
        started = time.monotonic()
        run = self._docker("start", self.name(host))
        assert run.returncode == 0, f"docker start {self.name(host)}: {run.stderr}"
        variables = self.lab.hosts[host]
        assert lab2.wait_for(lambda: ssh_answers(variables), timeout=timeout, interval=1), (
            f"{host}: sshd does not answer {timeout:.0f} s after docker start"
        )
        return time.monotonic() - started


class Welcomes:
    """The welcomes the fake Telegram recorded (calls that succeeded), per chat."""

    def __init__(self, telegram_url: str):
        self.url = f"{telegram_url}/_calls"

    def _calls(self, since: int) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}?since={since}", timeout=30) as resp:  # noqa: S310
            assert resp.status == 200, resp.status
            return json.loads(resp.read())

    def mark(self) -> int:
        """The sequence number of the last recorded call: count() after it only."""
        return max((call["seq"] for call in self._calls(0)), default=0)

    def count(self, chats, since: int) -> dict[int, int]:
        seen = dict.fromkeys(chats, 0)
        for call in self._calls(since):
            if call["method"] in WELCOME_METHODS and call.get("ok") and call["chat_id"] in seen:
                seen[call["chat_id"]] += 1
        return seen


@pytest.fixture(scope="session")
def haproxy(lb_vars) -> HAProxy:
    return HAProxy(lb_vars)


@pytest.fixture(scope="session")
def containers(lab) -> Containers:
    return Containers(lab)


@pytest.fixture(scope="session")
def welcomes(telegram_url) -> Welcomes:
    return Welcomes(telegram_url)


@pytest.fixture(scope="session")
def telegram(public, demo_bot):
    """A factory: telegram(deadline) delivers to the demo bot through HAProxy until then."""

    def make(deadline: float, timeout: float = 10.0, pause: float = 1.0) -> Telegram:
        return Telegram(public, demo_bot, deadline, timeout, pause)

    return make
