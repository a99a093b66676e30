"""Helpers for the lab suites and scripts (tests/phaseN): SSH commands, Patroni's REST API, SQL
through the app host's virtualenv. Every call goes to the lab's containers only, with bounded
timeouts.
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from grimbots_infra.inventory import ROOT, Inventory, load
from grimbots_infra.phases import ALL_ROLES

LAB_INVENTORY = ROOT / "inventory" / "lab"
SNAPSHOT = ROOT / "lab" / ".state" / "phase1-snapshot.json"
# The hosts' keys as lab.sh recorded them (docker exec, when each host came up): every SSH
# connection of the tests checks against them, as Ansible and pyinfra do.
KNOWN_HOSTS = ROOT / "lab" / ".state" / "known_hosts"
SSH_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", f"UserKnownHostsFile={KNOWN_HOSTS}",
    "-o", "LogLevel=ERROR",
)  # fmt: skip


def load_lab() -> Inventory:
    return load(ALL_ROLES, str(LAB_INVENTORY))


# The platform contract's paths on the lab's hosts (roles/platform, under the lab inventory).
_CONTRACT = load_lab().vars(load_lab().group("all")[0])  # lazy: templated on access
APP_CONFIG_DIR = _CONTRACT["platform_app_config_dir"]
# The app's database settings (the app role's database.env; PostgreSQL from phase 2).
PG_ENV = f"{APP_CONFIG_DIR}/database.env"
APP_PYTHON = f"{_CONTRACT['platform_app_home']}/venv/bin/python"
APP_CLI = _CONTRACT["platform_app_cli"]
LIB_DIR = _CONTRACT["platform_lib_dir"]


def ssh(
    host_vars: dict[str, Any], command: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a command on a lab host as root (the lab's key); never raises on a non-zero exit."""
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(ROOT / host_vars["ansible_ssh_private_key_file"]),
            *SSH_OPTIONS,
            "-o",
            "ConnectTimeout=5",
            f"root@{host_vars['ansible_host']}",
            command,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def port(name: str) -> int:
    """A port of the platform contract (roles/platform/defaults/main.yml), by service."""
    return int(_CONTRACT["platform_ports"][name])


def rest(address: str, path: str, port: int | None = None, timeout: float = 3) -> Any:
    """GET a Patroni REST endpoint (JSON); None when the member does not answer."""
    try:
        url = f"http://{address}:{port or globals()['port']('patroni_rest')}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def cluster(lab: Inventory, skip: set[str] | None = None) -> dict | None:
    """/cluster as seen by the first db member that answers."""
    for name in lab.groups["db"]:
        if skip and name in skip:
            continue
        state = rest(lab.hosts[name]["ansible_host"], "/cluster")
        if state:
            return state
    return None


def leaders(state: dict | None) -> list[str]:
    return [m["name"] for m in (state or {}).get("members", []) if m["role"] == "leader"]


def wait_for(check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = check()
    return value


# The app role's environment files, which its units and grimbots-manage read (in this order).
APP_ENV_FILES = (f"{APP_CONFIG_DIR}/grimbots.env", PG_ENV)
_APP_ENV = f"""
import os
for path in {APP_ENV_FILES!r}:
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            os.environ[name] = value
"""


def app_script(body: str) -> str:
    """A script for the app's Python (APP_PYTHON) on an app host, run with the environment the
    app's services have (its database and Redis settings)."""
    return _APP_ENV + body


_PG_QUERY = app_script("""
import json, sys
from sqlalchemy import text
from grimbots.db import Database
db = Database(os.environ["GRIMBOTS_DATABASE_URL"], pool_size=1, max_overflow=0)
rows = db.transaction(lambda s: [list(r) for r in s.execute(text(sys.argv[1])).all()])
print(json.dumps(rows, default=str))
""")


def pg_rows(app: dict[str, Any], sql: str) -> list[list]:
    """Rows of a query on the primary, through the app host's URL and password (PGPASSWORD)."""
    run = ssh(app, f"{APP_PYTHON} - {shlex.quote(sql)}", stdin=_PG_QUERY)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


# The deploy commands of each phase, as CI and the docs run them (from the repository root).
VAULT_PASSWORD_FILE = LAB_INVENTORY / "vault-password.txt"
PYINFRA_LIMITS = {
    1: ["app"],
    2: ["db", "backup", "app"],
    3: ["lb", "redis", "app"],
    4: ["app", "db", "lb", "redis", "monitoring"],
}


def deploy_command(
    tool: str,
    phase: int,
    extra_vars: dict[str, Any] | None = None,
    ansible_tags: str = "",
    limit: str = "",
) -> list[str]:
    """The command that deploys one phase of the lab with ``tool``: ansible, ansible-check
    (``--check``: what a run would change, changing nothing) or pyinfra. ``extra_vars`` override
    the inventory in both tools (Ansible's ``-e``; pyinfra's ``--data grimbots_extra_vars=``);
    ``ansible_tags`` limits an Ansible run to those tags (pyinfra runs the whole deploy);
    ``limit`` limits either tool to one host or group (``--limit``)."""
    bin_dir = ROOT / ".venv" / "bin"
    extra = json.dumps(extra_vars) if extra_vars else ""
    if tool in ("ansible", "ansible-check"):
        return [
            str(bin_dir / "ansible-playbook"),
            "-i",
            str(LAB_INVENTORY),
            "--vault-password-file",
            str(VAULT_PASSWORD_FILE),
            *(["--check"] if tool == "ansible-check" else []),
            *(["-e", extra] if extra else []),
            *(["--tags", ansible_tags] if ansible_tags else []),
            *(["--limit", limit] if limit else []),
            str(ROOT / "playbooks" / f"phase{phase}.yml"),
        ]
    if tool == "pyinfra":
        groups = [limit] if limit else PYINFRA_LIMITS[phase]
        limits = [arg for group in groups for arg in ("--limit", group)]
        return [
            str(bin_dir / "pyinfra"),
            "-y",
            *limits,
            *(["--data", f"grimbots_extra_vars={extra}"] if extra else []),
            "deploy/inventory.py",
            f"deploy/phase{phase}.py",
        ]
    raise ValueError(f"unknown deploy tool {tool!r} (ansible or pyinfra)")


def update_command(tool: str, extra_vars: dict[str, Any] | None = None) -> list[str]:
    """The rolling app update with ``tool`` (playbooks/app-update.yml, deploy/app_update.py;
    docs/operations.md, "Update the app"); ``extra_vars`` as for deploy_command."""
    bin_dir = ROOT / ".venv" / "bin"
    extra = json.dumps(extra_vars) if extra_vars else ""
    if tool == "ansible":
        return [
            str(bin_dir / "ansible-playbook"),
            "-i",
            str(LAB_INVENTORY),
            "--vault-password-file",
            str(VAULT_PASSWORD_FILE),
            *(["-e", extra] if extra else []),
            str(ROOT / "playbooks" / "app-update.yml"),
        ]
    if tool == "pyinfra":
        return [
            str(bin_dir / "pyinfra"),
            "-y",
            *("--limit", "lb", "--limit", "app"),
            *(["--data", f"grimbots_extra_vars={extra}"] if extra else []),
            "deploy/inventory.py",
            "deploy/app_update.py",
        ]
    raise ValueError(f"unknown deploy tool {tool!r} (ansible or pyinfra)")


def deploy(
    tool: str,
    phase: int,
    timeout: float = 900,
    extra_vars: dict[str, Any] | None = None,
    ansible_tags: str = "",
    limit: str = "",
) -> subprocess.CompletedProcess:
    """Deploy one phase of the lab with ``tool``; never raises on a failed run."""
    return subprocess.run(
        deploy_command(tool, phase, extra_vars, ansible_tags, limit),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# What the phases' rerun tests run: each tool, and Ansible in --check mode.
RERUN_TOOLS = ("ansible", "ansible-check", "pyinfra")


def assert_rerun_changes_nothing(tool: str, phase: int) -> None:
    """Deploy a phase again with ``tool`` on a lab already built (by either tool): the run must
    succeed and report no change. Both tools read the same inventory, vault, role defaults and
    templates through ansible-core, so a change reported here is a real drift between them."""
    run = deploy(tool, phase)
    out = run.stdout + run.stderr
    # Both tails: Ansible's failure is in stdout, its warnings (often many) in stderr.
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n--- stderr ---\n{run.stderr[-1500:]}"
    changed = changes(tool, out)
    assert not changed, "\n".join(changed) + "\n" + out[-3000:]


def changes(tool: str, output: str) -> list[str]:
    """What a deploy run reports as changed: Ansible's PLAY RECAP lines with changed > 0, or the
    rows of pyinfra's results table whose Success (= changed) column is not '-'."""
    if tool.startswith("ansible"):
        recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+).*$", output, re.M)
        if not recap:
            return ["no PLAY RECAP in the output"]
        return [f"{h}: changed={n}" for h, n in recap if int(n)]
    if "Grand total" not in output:
        return ["no pyinfra results table in the output"]
    rows = []
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 5 and cells[0] not in ("Operation", "Grand total") and cells[2] != "-":
            rows.append(line.strip())
    return rows


def start_update(update_id: int, chat_id: int, name: str = "Lab") -> dict:
    """A Telegram update: a new chat's /start (the funnel answers it with one welcome)."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": name},
            "from": {"id": chat_id, "is_bot": False, "first_name": name},
            "text": "/start",
        },
    }


@dataclass
class Answer:
    """One request's outcome: status 0 when no HTTP answer came (refused, reset, TLS failure,
    timeout), with the error's class in ``error``. Times are time.monotonic()."""

    status: int
    body: bytes
    error: str
    started: float
    ended: float


class Public:
    """The platform's public URL: HTTPS on the load balancer, its certificate verified against
    the lab CA. One connection per request, as Telegram's many senders would open."""

    def __init__(self, base_url: str, context: ssl.SSLContext):
        self.base_url = base_url
        self.context = context

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Answer:
        req = urllib.request.Request(  # noqa: S310 - lab URLs only
            self.base_url + path, data=body, method=method, headers=headers or {}
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as resp:  # noqa: S310
                status, raw, error = resp.status, resp.read(), ""
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            status, error = exc.code, ""
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None)
            cause = reason if isinstance(reason, BaseException) else exc
            status, raw, error = 0, b"", type(cause).__name__
        return Answer(status, raw, error, started, time.monotonic())


class Redelivering:
    """Telegram's side of a webhook, as Telegram plays it: each update is posted (plain HTTP,
    straight to an app node) until it is answered 200, a second apart, until ``deadline``
    (time.monotonic()). Every answer is kept with its time and status (0: no HTTP answer)."""

    def __init__(self, url: str, secret: str, deadline: float = float("inf")):
        self.url, self.deadline = url, deadline
        self.headers = {
            "X-Telegram-Bot-Api-Secret-Token": secret,
            "Content-Type": "application/json",
        }
        self.lock = threading.Lock()
        self.answers: list[tuple[float, int]] = []

    def _post(self, update: dict) -> int:
        req = urllib.request.Request(  # noqa: S310 - lab URLs only
            self.url, data=json.dumps(update).encode(), method="POST", headers=self.headers
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
                resp.read()
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, http.client.HTTPException):
            return 0

    def deliver(self, update: dict) -> bool:
        while time.monotonic() < self.deadline:
            status = self._post(update)
            with self.lock:
                self.answers.append((time.monotonic(), status))
            if status == 200:
                return True
            time.sleep(1.0)
        return False

    @property
    def attempts(self) -> int:
        return len(self.answers)

    @property
    def refused(self) -> int:
        """Answers not 200 (and requests without an answer), each redelivered."""
        return sum(1 for _, status in self.answers if status != 200)

    def longest_pause(self) -> float:
        """Seconds from the first answer not 200 to the next 200, the longest such run."""
        longest, since = 0.0, None
        for at, status in sorted(self.answers):
            if status != 200:
                since = at if since is None else since
            elif since is not None:
                longest, since = max(longest, at - since), None
        return longest
