"""Phase 1 with pyinfra: roles common + firewall + app on the first app host (every app host from
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

from grimbots_infra import apply, roles
from grimbots_infra.pyinfra_ops import fact, host_step, host_vars, require_phase, wait

ROLES = ("common", "firewall", "app")


def common(variables) -> None:
    apply.install("common", variables)
    apply.service("common", variables, apply.configure("common", variables))
    apply.install("firewall", variables)
    apply.service("firewall", variables, apply.configure("firewall", variables))


def app(variables) -> None:
    lib, venv, wheels_dir = (
        variables["platform_lib_dir"],
        variables["grimbots_venv"],
        variables["grimbots_wheels_dir"],
    )
    src = Path(variables["grimbots_wheels_src"])
    stamp = (src / ".stamp").read_text().strip()
    apply.install("app", variables)
    new_wheels = fact(f"cat {venv}/.wheel-stamp") != stamp
    if new_wheels:  # the wheels travel only for a new set
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
    migrate = f"{lib}/grimbots-migrate {variables['grimbots_data_dir']} {schema}"
    host_step(
        name="Apply the database migrations (once per code and database URL)",
        command=migrate,
        check=migrate.replace(" ", " --check ", 1),
    )
    if not variables["grimbots_local_redis"]:
        switch = f"{lib}/grimbots-switch-redis {variables['grimbots_redis_url']}"
        host_step(
            name="Move the local Redis' data to the phase-3 Redis and retire it (once)",
            command=switch,
            check=switch.replace(" ", " --check ", 1),
        )
    apply.service(
        "app", variables, triggers, {"reload-web": [installed], "restart-workers": [installed]}
    )
    retire = f"{lib}/grimbots-retire-workers " + " ".join(
        roles.derived("app").worker_instances(variables["grimbots_workers"])
    )
    host_step(
        name="Stop and disable worker instances the inventory no longer lists",
        command=retire,
        check=retire.replace(" ", " --check ", 1),
    )
    wait(
        name="Wait until /health answers 200 on the database database.env names",
        command=f"{lib}/grimbots-wait-health {variables['grimbots_health_timeout']} "
        f"http://127.0.0.1:{variables['grimbots_web_port']}/health "
        f"{variables['app_database_backend']}",
    )
    if host.name == variables["platform_first_app_host"]:
        host_step(
            name="Set the bots' webhooks to the public URL where Telegram has another one",
            command=f"{variables['platform_app_cli']} set-webhooks",
            check=f"{variables['platform_app_cli']} set-webhooks --check",
        )


if "app" in host.groups:
    require_phase(1)
    variables = host_vars(ROLES)
    if int(variables["platform_phase"]) >= 3 or host.name == variables["platform_first_app_host"]:
        common(variables)
        if host.name in variables["platform_front_door"]:  # phases 1-2: TLS on this host
            roles.pyinfra_steps("haproxy").apply_role(host_vars(("common", "haproxy")))
        app(variables)
