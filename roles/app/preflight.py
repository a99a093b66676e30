"""The app role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks")."""

from __future__ import annotations

from pathlib import Path

from grimbots_infra import guards, roles
from grimbots_infra.preflight import Inputs, vault_password


def check(inputs: Inputs) -> list[str]:
    derived = roles.derived("app")
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
        if w.get("queue") not in derived.KNOWN_QUEUES or int(w.get("count", 0)) <= 0:
            out.append(
                inputs.problem(
                    "grimbots_workers",
                    f"entry {w} needs a queue among {', '.join(derived.KNOWN_QUEUES)} "
                    "and a count > 0",
                )
            )
    missing = [q for q in derived.REQUIRED_QUEUES if q not in {w.get("queue") for w in workers}]
    if missing:
        out.append(inputs.problem("grimbots_workers", f"no worker serves {', '.join(missing)}"))
    if not 1 <= int(inputs["grimbots_restart_sec"]) <= 5:
        out.append(inputs.problem("grimbots_restart_sec", "must be 1 to 5 s (recovery under 15 s)"))
    local_redis = bool(inputs["grimbots_local_redis"])
    if local_redis:
        needed = derived.redis_clients_needed(
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
        out += vault_password(
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
    """The app's internal endpoints: its own bind, the load balancers it trusts, the phase-3
    Redis."""
    groups, kinds = inputs.get("groups", {}), inputs.get("platform_groups", {})
    lbs = list(groups.get(kinds.get("lb", "lb"), []))
    redis = list(groups.get(kinds.get("redis", "redis"), []))
    out = guards.own_private(inputs, "grimbots_web_address")  # Gunicorn binds it
    out += guards.listed(inputs, "grimbots_trusted_proxies", lbs, "platform_private_address")
    if inputs["grimbots_redis_mode"] == "cluster":
        out += guards.listed(inputs, "grimbots_redis_cluster_nodes", redis, "redis_cluster_address")
    if inputs["grimbots_queue_redis_mode"] == "sentinel":
        out += guards.listed(inputs, "grimbots_sentinels", redis, "queue_redis_address")
    return out
