"""The roles' input checks, written once: run by the playbooks' first play (through the platform
role's lookup plugin ``grimbots_preflight``) and by the pyinfra deploys, before any host changes.

Each check returns messages that name the variable, what is wrong, and the file to fix: where the
value came from (Ansible tags every loaded value with its origin), else the inventory.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from grimbots_infra import derive, guards
from grimbots_infra.acme_checks import haproxy_acme, truthy

ROOT = Path(__file__).resolve().parents[3]
SECRET = re.compile(r"password|secret|token|tls_key", re.I)
# Variables a value names plainly, "{{ vault_x }}" (followed to name the vault's key).
REFERENCES = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PASSWORD_CHARS = re.compile(r"^[A-Za-z0-9+/=_.~-]+$")


class PreflightError(RuntimeError):
    """A host's inputs fail the checks: the message lists every problem, one a line."""


class Inputs:
    """What a check reads: a host's variables (templated), and where each one was set."""

    def __init__(
        self,
        host: str,
        get: Callable[[str], Any],
        origin: Callable[[str], str | None],
        raw: Callable[[str], Any] | None = None,
    ):
        self.host, self._get, self._origin, self._raw = host, get, origin, raw

    def __getitem__(self, name: str) -> Any:
        return self._get(name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            value = self._get(name)
        except KeyError:
            return default
        return default if value is None else value

    def where(self, name: str) -> str:
        """The file (and line) to edit for ``name``."""
        origin = self._origin(name)
        if origin:
            path = origin.split(":")[0]
            shown = origin.replace(str(ROOT) + "/", "")
            if "/defaults/main.yml" in path:
                return (
                    f"the inventory (group_vars or host_vars of {self.host}); "
                    f"its default is at {shown}"
                )
            return shown
        return f"the inventory (group_vars or host_vars of {self.host})"

    def sources(self, name: str) -> list[str]:
        """The variables ``name``'s raw value names (``"{{ vault_x }}"``), followed through
        plain references: where an operator finds the value (the vault's key)."""
        if self._raw is None:
            return []
        found, todo = [], [name]
        for _ in range(8):
            if not todo:
                break
            current = todo.pop(0)
            try:
                raw = self._raw(current)
            except KeyError:
                continue
            names = REFERENCES.findall(str(raw)) if raw is not None else []
            for ref in names:
                single = self._raw_or_none(ref)
                if single is not None and REFERENCES.search(str(single)):
                    todo.append(ref)
                elif ref not in found:
                    found.append(ref)
        return found

    def _raw_or_none(self, name: str) -> Any:
        try:
            return self._raw(name) if self._raw else None
        except KeyError:
            return None

    def problem(self, name: str, text: str) -> str:
        value = "(secret)" if SECRET.search(name) else repr(self.get(name))
        sources = self.sources(name)
        via = f" (from {', '.join(sources)})" if sources else ""
        return f"{self.host}: {name}={value}{via}: {text}; set it in {self.where(name)}"


def _vault_password(inputs: Inputs, name: str, source: str = "from the vault") -> list[str]:
    """The problem of a password that a URL, a config file or libpq could mangle, if any."""
    placeholder = guards.placeholder(inputs, name)
    if placeholder:
        return placeholder
    password = str(inputs.get(name, ""))
    if len(password) < 16 or not PASSWORD_CHARS.match(password):
        return [
            inputs.problem(name, f"needs 16+ characters among A-Z a-z 0-9 + / = _ . ~ - {source}")
        ]
    return []


def common(inputs: Inputs) -> list[str]:
    out = []
    for item in inputs.get("common_sysctl", []):
        if not str(item.get("name", "")) or not str(item.get("value", "")):
            out.append(
                inputs.problem("common_sysctl", f"each entry needs a name and a value: {item}")
            )
    if int(inputs["common_nofile_limit"]) < 4096:
        out.append(inputs.problem("common_nofile_limit", "must be at least 4096"))
    return out


def app(inputs: Inputs) -> list[str]:
    out = []
    src = Path(str(inputs["grimbots_wheels_src"]))
    if not (src / ".stamp").is_file():
        out.append(
            f"{inputs.host}: no wheels in {src}: run `make wheels` first "
            f"(grimbots_wheels_src, set in {inputs.where('grimbots_wheels_src')})"
        )
    elif len(list(src.glob("grimbots-*.whl"))) != 1:
        out.append(f"{inputs.host}: {src} must hold exactly one grimbots-*.whl: run `make wheels`")
    workers = inputs["grimbots_workers"]
    for w in workers:
        if w.get("queue") not in derive.KNOWN_QUEUES or int(w.get("count", 0)) <= 0:
            out.append(
                inputs.problem(
                    "grimbots_workers",
                    f"entry {w} needs a queue among {', '.join(derive.KNOWN_QUEUES)} "
                    "and a count > 0",
                )
            )
    missing = [q for q in derive.REQUIRED_QUEUES if q not in {w.get("queue") for w in workers}]
    if missing:
        out.append(inputs.problem("grimbots_workers", f"no worker serves {', '.join(missing)}"))
    if not 1 <= int(inputs["grimbots_restart_sec"]) <= 5:
        out.append(inputs.problem("grimbots_restart_sec", "must be 1 to 5 s (recovery under 15 s)"))
    local_redis = bool(inputs["grimbots_local_redis"])
    if local_redis:
        needed = derive.redis_clients_needed(
            inputs["grimbots_web_workers"], workers, inputs["grimbots_redis_max_connections"]
        )
        if int(inputs["grimbots_redis_maxclients"]) < needed:
            out.append(
                inputs.problem(
                    "grimbots_redis_maxclients",
                    f"below what the processes may open ({needed}: web and RQ workers x 2 "
                    "pools x grimbots_redis_max_connections)",
                )
            )
        if len(str(inputs.get("grimbots_redis_password", ""))) < 16:
            out.append(
                inputs.problem("grimbots_redis_password", "needs 16+ characters from the vault")
            )
    out += guards.secrets(inputs, ["grimbots_redis_password", "grimbots_gateway_secrets"])
    out += _app_addresses(inputs)
    if inputs["grimbots_redis_mode"] not in ("single", "cluster"):
        out.append(inputs.problem("grimbots_redis_mode", "must be single or cluster"))
    elif inputs["grimbots_redis_mode"] == "cluster" and not inputs["grimbots_redis_cluster_nodes"]:
        out.append(
            inputs.problem("grimbots_redis_cluster_nodes", "cluster mode needs the redis hosts")
        )
    if inputs["grimbots_queue_redis_mode"] not in ("single", "sentinel"):
        out.append(inputs.problem("grimbots_queue_redis_mode", "must be single or sentinel"))
    elif inputs["grimbots_queue_redis_mode"] == "sentinel":
        if len(str(inputs["grimbots_sentinels"]).split(",")) < 3:
            out.append(
                inputs.problem("grimbots_sentinels", "sentinel mode needs 3 or more Sentinels")
            )
        if int(inputs["grimbots_queue_min_replicas"]) < 1:
            out.append(
                inputs.problem(
                    "grimbots_queue_min_replicas",
                    "must be 1 or more with replicas: an update acknowledged to Telegram has to "
                    "survive the loss of the queue primary",
                )
            )
    url = str(inputs["grimbots_database_url"])
    if not url.startswith(("sqlite:", "postgresql:", "postgresql+")):
        out.append(
            inputs.problem("grimbots_database_url", "must be a sqlite:// or postgresql:// URL")
        )
    elif url.startswith("postgresql"):
        if not inputs["groups"].get(inputs["platform_groups"]["db"]):
            out.append(inputs.problem("platform_groups", "the db group lists no database hosts"))
        out += _vault_password(
            inputs,
            "grimbots_database_password",
            "(the db group's patroni_app_password, from the vault)",
        )
    secrets = inputs.get("grimbots_gateway_secrets", {}) or {}
    if not secrets or any(len(str(s)) < 16 for s in secrets.values()):
        out.append(
            inputs.problem(
                "grimbots_gateway_secrets", "needs one secret per gateway, 16+ characters"
            )
        )
    return out


def _app_addresses(inputs: Inputs) -> list[str]:
    """The app's internal endpoints: the load balancers it trusts, the phase-3 Redis."""
    groups, kinds = inputs.get("groups", {}), inputs.get("platform_groups", {})
    lbs = list(groups.get(kinds.get("lb", "lb"), []))
    redis = list(groups.get(kinds.get("redis", "redis"), []))
    out = guards.listed(inputs, "grimbots_trusted_proxies", lbs, "platform_private_address")
    if inputs["grimbots_redis_mode"] == "cluster":
        out += guards.listed(inputs, "grimbots_redis_cluster_nodes", redis, "redis_cluster_address")
    if inputs["grimbots_queue_redis_mode"] == "sentinel":
        out += guards.listed(inputs, "grimbots_sentinels", redis, "queue_redis_address")
    return out


def patroni(inputs: Inputs) -> list[str]:
    out = []
    group = inputs["patroni_group"]
    members = list(inputs["groups"].get(group, []))
    if len(members) < 3 or len(members) % 2 == 0 or inputs.host not in members:
        out.append(
            inputs.problem(
                "patroni_group",
                f"etcd needs an odd number (3+) of members including {inputs.host}; "
                f"'{group}' has {members}",
            )
        )
    t = derive.patroni_timings(inputs["patroni_recovery_seconds"])
    if t["ttl"] < derive.PATRONI_MIN_TTL or t["loop_wait"] + 2 * t["retry_timeout"] > t["ttl"]:
        out.append(
            inputs.problem(
                "patroni_recovery_seconds",
                f"Patroni's ttl must be at least {derive.PATRONI_MIN_TTL} s (its documented "
                f"bound); gives {t}",
            )
        )
    for key in (
        "patroni_superuser_password",
        "patroni_replication_password",
        "patroni_rewind_password",
        "patroni_restapi_password",
        "patroni_app_password",
    ):
        if guards.placeholder(inputs, key):
            out += guards.placeholder(inputs, key)
        elif len(str(inputs.get(key, ""))) < 16:
            out.append(inputs.problem(key, "needs 16+ characters from the vault"))
    hostvars = inputs["hostvars"]
    addresses = [derive.address(hostvars, m) for m in members]
    if len(set(addresses)) != len(addresses):
        out.append(inputs.problem("patroni_address", f"each member needs its own; got {addresses}"))
    out += guards.own_private(inputs, "patroni_address")
    out += guards.members_private(inputs, "etcd and Patroni", members, "patroni_address")
    groups = inputs["groups"]
    clients = [h for g in inputs.get("patroni_client_groups", []) for h in groups.get(g, [])]
    return out + guards.members_private(inputs, "pg_hba", clients, "patroni_client_address")


RULES = ROOT / "roles" / "monitoring" / "files" / "alert_rules.yml"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
SIZE = re.compile(r"^[0-9]+(B|KB|MB|GB|TB|PB|EB)$")
TELEGRAM_TOKEN = re.compile(r"^[0-9]+:[A-Za-z0-9_-]+$")


def rule_jobs() -> set[str]:
    """The scrape jobs the alert rules select (``job="..."``)."""
    return set(re.findall(r'job="([a-z_]+)"', RULES.read_text()))


def monitoring(inputs: Inputs) -> list[str]:
    out = []
    if not inputs["groups"].get(inputs["monitoring_group"]):
        out.append(inputs.problem("monitoring_group", "the group lists no monitoring host"))
    out += _vault_password(inputs, "monitoring_web_password")
    if guards.placeholder(inputs, "monitoring_telegram_bot_token"):
        out += guards.placeholder(inputs, "monitoring_telegram_bot_token")
    elif not TELEGRAM_TOKEN.match(str(inputs.get("monitoring_telegram_bot_token", ""))):
        out.append(
            inputs.problem(
                "monitoring_telegram_bot_token", "needs a bot token <id>:<secret> (vault)"
            )
        )
    out += guards.chat_id(inputs, "monitoring_telegram_chat_id")
    for key in ("monitoring_retention_time", "monitoring_scrape_interval"):
        if not DURATION.match(str(inputs.get(key, ""))):
            out.append(inputs.problem(key, "must be a Prometheus duration such as 15s or 15d"))
    if not SIZE.match(str(inputs.get("monitoring_retention_size", ""))):
        out.append(inputs.problem("monitoring_retention_size", "must be a size such as 8GB"))
    # blackbox: prometheus.yml.j2 probes each front door (platform_front_door) besides these.
    jobs = {str(j.get("name")) for j in inputs.get("monitoring_scrape_jobs", [])} | {"blackbox"}
    missing = sorted(rule_jobs() - jobs)
    if missing:
        out.append(
            inputs.problem(
                "monitoring_scrape_jobs",
                f"the alert rules select job(s) {', '.join(missing)} that no entry scrapes",
            )
        )
    if inputs.get("monitoring_email_to") and not inputs.get("monitoring_email_smarthost"):
        out.append(inputs.problem("monitoring_email_smarthost", "e-mail alerts need an SMTP relay"))
    out += guards.secrets(inputs, ["monitoring_email_auth_password", "monitoring_haproxy_password"])
    if bool(inputs.get("monitoring_grafana_enabled", False)):
        out += _vault_password(inputs, "monitoring_grafana_admin_password")
    out += guards.own_private(inputs, "monitoring_address")
    groups = inputs["groups"]
    targets = [h for g in inputs.get("monitoring_exporter_groups", []) for h in groups.get(g, [])]
    return out + guards.members_private(
        inputs, "Prometheus' targets", dict.fromkeys(targets), "monitoring_target_address"
    )


def exporters(inputs: Inputs) -> list[str]:
    out = []
    if inputs.host in inputs["groups"].get(inputs["exporters_postgres_group"], []):
        out += _vault_password(inputs, "exporters_postgres_password")
    if inputs.host in inputs["groups"].get(inputs["exporters_redis_group"], []):
        out += guards.secrets(inputs, ["exporters_redis_password"])
    return out + guards.own_private(inputs, "exporters_address")


def haproxy(inputs: Inputs) -> list[str]:
    out = haproxy_acme(inputs)
    if truthy(
        inputs.get("haproxy_backend_local", False)
    ):  # the front door on the app host: Gunicorn
        servers: list[str] = []  # on its loopback, nothing to check in the app group
    else:
        servers = _haproxy_servers(inputs, out)
    recovery = int(inputs["haproxy_recovery_seconds"])
    if not 1 <= recovery <= 30:
        out.append(inputs.problem("haproxy_recovery_seconds", "must be 1 to 30 s"))
    out += _vault_password(inputs, "haproxy_stats_password")
    acme_only = truthy(inputs.get("haproxy_acme", False)) and not inputs.get(
        "haproxy_tls_certificate"
    )
    if not truthy(inputs["haproxy_tls_selfsigned"]) and not acme_only:
        out += guards.certificate(inputs, "haproxy_tls_certificate", "haproxy_tls_key")
    if servers:
        out += guards.members_private(
            inputs, "HAProxy's backends", servers, "haproxy_backend_address"
        )
    for name in ("haproxy_go_rate_limit", "haproxy_go_rate_period_s", "haproxy_body_limit_bytes"):
        if int(inputs[name]) <= 0:
            out.append(inputs.problem(name, "must be above 0"))
    return out


def _haproxy_servers(inputs: Inputs, out: list[str]) -> list[str]:
    group = inputs["haproxy_backend_group"]
    servers = list(inputs["groups"].get(group, []))
    if not servers:
        out.append(
            inputs.problem("haproxy_backend_group", f"the group '{group}' lists no app node")
        )
    addresses = derive.addresses(servers, inputs["hostvars"], "haproxy_backend_address")
    if len(set(addresses)) != len(addresses):
        out.append(
            inputs.problem(
                "haproxy_backend_group", f"each app node needs its own address: {addresses}"
            )
        )
    return servers


def redis_cluster(inputs: Inputs) -> list[str]:
    out = []
    group = inputs["redis_cluster_group"]
    members = list(inputs["groups"].get(group, []))
    anti_affinity = bool(inputs["redis_cluster_anti_affinity"])
    if inputs.host not in members or (anti_affinity and len(members) < 3):
        out.append(
            inputs.problem(
                "redis_cluster_group",
                f"a cluster of 3 masters with replicas on other hosts needs 3+ hosts including "
                f"{inputs.host}; '{group}' has {members}",
            )
        )
    ports = [int(p) for p in inputs["redis_cluster_ports"]]
    if len(ports) != 2 or ports[0] == ports[1]:
        out.append(inputs.problem("redis_cluster_ports", "needs two ports: masters', replicas'"))
    addresses = derive.addresses(members, inputs["hostvars"], "redis_cluster_address")
    if anti_affinity and len(set(addresses)) != len(addresses):
        out.append(inputs.problem("redis_cluster_address", f"each host needs its own: {addresses}"))
    if int(inputs["redis_cluster_recovery_seconds"]) < 5:
        out.append(
            inputs.problem(
                "redis_cluster_recovery_seconds",
                "must be at least 5 s (a 1 s node timeout, the replica's election, the client)",
            )
        )
    out += guards.own_private(inputs, "redis_cluster_address")
    return out + _vault_password(inputs, "redis_cluster_password")


def queue_redis(inputs: Inputs) -> list[str]:
    out = []
    group = inputs["queue_redis_group"]
    members = list(inputs["groups"].get(group, []))
    quorum = int(inputs["queue_redis_quorum"])
    if inputs.host not in members or len(members) < 3:
        out.append(
            inputs.problem(
                "queue_redis_group",
                f"a primary, 2+ replicas and 3+ Sentinels need 3+ hosts including {inputs.host}; "
                f"'{group}' has {members}",
            )
        )
    elif not len(members) // 2 < quorum <= len(members):
        out.append(
            inputs.problem(
                "queue_redis_quorum",
                f"must be a majority of the {len(members)} Sentinels (two sides of a split "
                "must never both fail over)",
            )
        )
    if not 0 < int(inputs["queue_redis_min_replicas_to_write"]) < max(len(members), 2):
        out.append(
            inputs.problem(
                "queue_redis_min_replicas_to_write",
                "must be 1+ (an acknowledged job on two hosts) and below the host count "
                "(writes go on while one replica is down)",
            )
        )
    if int(inputs["queue_redis_recovery_seconds"]) < 4:
        out.append(inputs.problem("queue_redis_recovery_seconds", "must be at least 4 s"))
    out += guards.own_private(inputs, "queue_redis_address")
    return out + _vault_password(inputs, "queue_redis_password")


CHECKS: dict[str, Callable[[Inputs], list[str]]] = {
    "common": common,
    "app": app,
    "patroni": patroni,
    "monitoring": monitoring,
    "exporters": exporters,
    "haproxy": haproxy,
    "redis_cluster": redis_cluster,
    "queue_redis": queue_redis,
    # The phase guards: a playbook's first play and a pyinfra deploy name its phase as a check.
    **{f"phase{n}": functools.partial(guards.phase, minimum=n) for n in guards.PHASES},
}


def check(
    roles: list[str] | tuple[str, ...], inputs: Inputs, phase: int | None = None
) -> list[str]:
    """Every problem the roles' inputs have on one host (empty when it may be deployed); with
    ``phase``, first platform_phase's (1-4, at least the phase deployed): a wrong phase makes
    every role derive the wrong settings, so the roles are not checked then."""
    if phase is not None:
        problems = guards.phase(inputs, phase)
        if problems:
            return problems
    return [p for role in roles if role in CHECKS for p in CHECKS[role](inputs)]


def from_host_vars(host_vars: Mapping[str, Any]) -> Inputs:
    """Inputs from grimbots_infra.inventory.HostVars (the pyinfra side)."""
    return Inputs(
        host_vars.name,  # type: ignore[attr-defined]
        host_vars.__getitem__,
        host_vars.origin,  # type: ignore[attr-defined]
        host_vars.raw,  # type: ignore[attr-defined]
    )
