"""The app with pyinfra: the app role's stages and host-side helpers, in the order its tasks run
them (roles/app/tasks/main.yml). Phase 1's deploy runs it on the first app host (every app host
from platform_phase 3), through grimbots_infra.apply.role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.operations import files

from grimbots_infra import apply, roles
from grimbots_infra.pyinfra_ops import fact, host_step, wait


def _step(name: str, command: str) -> Any:
    """A helper that says itself whether it has anything to do (its --check form)."""
    return host_step(name=name, command=command, check=command.replace(" ", " --check ", 1))


def _wheels(variables: dict[str, Any], stamp: str) -> bool:
    """Copy the wheel set when the venv has another one; whether it is new."""
    venv, wheels_dir = variables["grimbots_venv"], variables["grimbots_wheels_dir"]
    if fact(f"cat {venv}/.wheel-stamp") == stamp:
        return False
    files.directory(
        name="Create the wheel set's directory",
        path=f"{wheels_dir}/{stamp}",
        user="root",
        group="root",
        mode="0755",
    )
    for wheel in sorted(Path(variables["grimbots_wheels_src"]).glob("*.whl")):
        files.put(
            name=f"Copy {wheel.name}",
            src=str(wheel),
            dest=f"{wheels_dir}/{stamp}/{wheel.name}",
            user="root",
            group="root",
            mode="0644",
        )
    return True


def apply_role(variables: dict[str, Any]) -> None:
    """Install, the wheels (only a new set travels), configure, the database and Redis moves,
    migrations, service, retired workers, /health, then the bots' webhooks (first host)."""
    lib = variables["platform_lib_dir"]
    stamp = (Path(variables["grimbots_wheels_src"]) / ".stamp").read_text().strip()
    apply.install("app", variables)
    new_wheels = _wheels(variables, stamp)
    installed = _step(
        "Install the app and its dependencies from the wheels, offline (once per wheel set)",
        f"{lib}/grimbots-install-wheels {variables['grimbots_venv']} "
        f"{variables['grimbots_wheels_dir']} {stamp}",
    )
    # New code: Gunicorn re-forks its workers, the RQ workers restart (warm shutdown).
    new_code = ["reload-web", "restart-workers"] if new_wheels else []
    triggers = apply.configure("app", variables, new_code)
    switch_db = f"{lib}/grimbots-switch-database"
    host_step(
        name="Install the database settings, moving the SQLite data to PostgreSQL first when due",
        command=switch_db,
        check=f"{switch_db} --check",
    )
    schema = roles.derived("app").schema_stamp(stamp, variables["grimbots_database_url"])
    _step(
        "Apply the database migrations (once per code and database URL)",
        f"{lib}/grimbots-migrate {variables['grimbots_data_dir']} {schema}",
    )
    if not variables["grimbots_local_redis"]:
        _step(
            "Move the local Redis' data to the phase-3 Redis and retire it (once)",
            f"{lib}/grimbots-switch-redis {variables['grimbots_redis_url']}",
        )
    apply.service(
        "app", variables, triggers, {"reload-web": [installed], "restart-workers": [installed]}
    )
    _step(
        "Stop and disable worker instances the inventory no longer lists",
        f"{lib}/grimbots-retire-workers "
        + " ".join(roles.derived("app").worker_instances(variables["grimbots_workers"])),
    )
    wait(
        name="Wait until /health answers 200 on the database database.env names",
        command=f"{lib}/grimbots-wait-health {variables['grimbots_health_timeout']} "
        f"http://127.0.0.1:{variables['grimbots_web_port']}/health "
        f"{variables['app_database_backend']}",
    )
    if host.name == variables["platform_first_app_host"]:
        cli = variables["platform_app_cli"]
        host_step(
            name="Set the bots' webhooks to the public URL where Telegram has another one",
            command=f"{cli} set-webhooks",
            check=f"{cli} set-webhooks --check",
        )
