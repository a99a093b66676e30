"""Phase 1 with pyinfra: roles common + app on the first app host (every app host from
platform_phase 3), as playbooks/phase1.yml.

    pyinfra -y --limit app deploy/inventory.py deploy/phase1.py

Ordering and glue only: each role's manifest (roles/<role>/vars/main.yml) is applied by
grimbots_infra.apply, stage by stage as the role's tasks do; the stateful steps are the role's
host-side helpers, which Ansible calls too. Variables come from ansible-core (grimbots_infra),
after the shared preflight checks.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.operations import files

from grimbots_infra import apply, derive
from grimbots_infra.pyinfra_ops import fact, host_step, host_vars, wait

ROLES = ("common", "app")


def common(v) -> None:
    apply.install("common", v)
    apply.service("common", v, apply.configure("common", v))


def app(v) -> None:
    lib, venv, wheels_dir = v["platform_lib_dir"], v["grimbots_venv"], v["grimbots_wheels_dir"]
    src = Path(v["grimbots_wheels_src"])
    stamp = (src / ".stamp").read_text().strip()
    apply.install("app", v)
    if fact(f"cat {venv}/.wheel-stamp") != stamp:  # the wheels travel only for a new set
        files.directory(
            name="Create the wheel set's directory",
            path=f"{wheels_dir}/{stamp}",
            user="root",
            group="root",
            mode="0755",
        )
        for wheel in sorted(src.glob("*.whl")):
            files.put(
                name=f"Copy {wheel.name}",
                src=str(wheel),
                dest=f"{wheels_dir}/{stamp}/{wheel.name}",
                user="root",
                group="root",
                mode="0644",
            )
    install = f"{lib}/grimbots-install-wheels {venv} {wheels_dir} {stamp}"
    installed = host_step(
        name="Install the app and its dependencies from the wheels, offline (once per wheel set)",
        command=install,
        check=install.replace(" ", " --check ", 1),
    )
    triggers = apply.configure("app", v)
    switch_db = f"{lib}/grimbots-switch-database"
    host_step(
        name="Install the database settings, moving the SQLite data to PostgreSQL first when due",
        command=switch_db,
        check=f"{switch_db} --check",
    )
    migrate = f"{lib}/grimbots-migrate {v['grimbots_data_dir']} " + derive.schema_stamp(
        stamp, v["grimbots_database_url"]
    )
    host_step(
        name="Apply the database migrations (once per code and database URL)",
        command=migrate,
        check=migrate.replace(" ", " --check ", 1),
    )
    if not v["grimbots_local_redis"]:
        switch = f"{lib}/grimbots-switch-redis {v['grimbots_redis_url']}"
        host_step(
            name="Move the local Redis' data to the phase-3 Redis and retire it (once)",
            command=switch,
            check=switch.replace(" ", " --check ", 1),
        )
    apply.service("app", v, triggers, {"reload-web": [installed], "restart-workers": [installed]})
    retire = f"{lib}/grimbots-retire-workers " + " ".join(
        derive.worker_instances(v["grimbots_workers"])
    )
    host_step(
        name="Stop and disable worker instances the inventory no longer lists",
        command=retire,
        check=retire.replace(" ", " --check ", 1),
    )
    wait(
        name="Wait until /health answers 200 on the database database.env names",
        command=f"{lib}/grimbots-wait-health {v['grimbots_health_timeout']} "
        f"http://127.0.0.1:{v['grimbots_web_port']}/health {v['app_database_backend']}",
    )
    if host.name == v["platform_first_app_host"]:
        host_step(
            name="Set the bots' webhooks to the public URL where Telegram has another one",
            command=f"{v['platform_app_cli']} set-webhooks",
            check=f"{v['platform_app_cli']} set-webhooks --check",
        )


if "app" in host.groups:
    _v = host_vars(ROLES)
    if int(_v["platform_phase"]) >= 3 or host.name == _v["platform_first_app_host"]:
        common(_v)
        app(_v)
