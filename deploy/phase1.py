"""Phase 1 with pyinfra: the same hosts as playbooks/phase1.yml (roles common + app).

    pyinfra -y deploy/inventory.py deploy/phase1.py --limit app1

Renders the roles' own templates (roles/*/templates/*.j2) with the variables Ansible would use
(role defaults + inventory + vault, loaded by deploy/ansible_vars.py), and mirrors each role task
with the pyinfra operation that checks the same state, so that a run of either tool after the
other changes nothing (scripts/test-lab.sh checks this both ways).
"""

from __future__ import annotations

import io
from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import FindFiles, FindLinks
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from grimbots_infra.inventory import load
from grimbots_infra.phases import ALL_ROLES
from grimbots_infra.pyinfra_ops import fact, put_drop_in, put_template
from grimbots_infra.render import sha1

CONTAINERS = {"docker", "container", "containerd", "podman", "lxc", "openvz", "systemd-nspawn"}


def service_user(user: str, home: str) -> None:
    server.group(name=f"Create the {user} group", group=user, system=True)
    server.user(  # noqa: S604 - `shell` is the login shell, not a subprocess flag
        name=f"Create the {user} user without a login shell",
        user=user,
        group=user,
        home=home,
        shell="/usr/sbin/nologin",
        system=True,
        ensure_home=False,
    )


def common(v: dict) -> None:
    """roles/common."""
    apt.packages(
        name="Install the base packages",
        packages=v["common_packages"],
        update=v["common_apt_update_cache"],
        cache_time=v["common_apt_cache_valid_time"],
    )
    user = v["common_service_user"]
    service_user(user, v["common_service_home"])
    files.directory(
        name="Create the service user's home directory",
        path=v["common_service_home"],
        user=user,
        group=user,
        mode="0750",
    )
    for item in v["common_sysctl"]:
        server.sysctl(
            name=f"Apply and persist {item['name']}",
            key=item["name"],
            value=str(item["value"]),
            persist=True,
            persist_file=v["common_sysctl_file"],
        )
    put_template(
        "common/templates/limits.conf.j2",
        "/etc/security/limits.d/60-grimbots.conf",
        v,
        "root",
        "root",
        "0644",
    )
    journald = put_drop_in(
        "common/templates/journald.conf.j2", "/etc/systemd/journald.conf.d", "60-grimbots.conf", v
    )
    systemd.service(
        name="Restart journald",
        service="systemd-journald",
        running=True,
        restarted=True,
        _if=journald.did_change,
    )
    virt = fact("systemd-detect-virt --container")
    if v["common_timesync_enabled"] and virt not in CONTAINERS:
        apt.packages(name="Install time sync", packages=v["common_timesync_packages"])
        sources = put_template(
            "common/templates/chrony.sources.j2",
            "/etc/chrony/sources.d/grimbots.sources",
            v,
            "root",
            "root",
            "0644",
        )
        server.shell(
            name="Reload chrony sources",
            commands=["chronyc reload sources"],
            _if=sources.did_change,
        )
        systemd.service(
            name="Start and enable chrony", service="chrony", running=True, enabled=True
        )


def worker_instances(v: dict) -> list[str]:
    return [
        f"{w['queue']}-{n}" for w in v["grimbots_workers"] for n in range(1, int(w["count"]) + 1)
    ]


def app(v: dict) -> None:
    """roles/app."""
    user, venv, wheels_dir = v["grimbots_user"], v["grimbots_venv"], v["grimbots_wheels_dir"]
    src = Path(v["grimbots_wheels_src"])
    stamp_file = src / ".stamp"
    if not stamp_file.exists():
        raise SystemExit(f"no wheels in {src}: run `make wheels` first")
    wheel_stamp = stamp_file.read_text().strip()
    wheels = sorted(p.name for p in src.glob("*.whl"))
    app_wheel = next(w for w in wheels if w.startswith("grimbots-"))
    instances = worker_instances(v)

    # install
    apt.packages(
        name="Install the app's Debian packages",
        packages=v["grimbots_packages"],
        update=v["grimbots_apt_update_cache"],
        cache_time=3600,
    )
    if v["grimbots_local_redis"]:
        apt.packages(name="Install the local Redis", packages=v["grimbots_redis_packages"])
    service_user(user, v["grimbots_data_dir"])
    for path in (v["grimbots_home"], f"{v['grimbots_home']}/bin", wheels_dir):
        files.directory(name=f"Create {path}", path=path, user="root", group="root", mode="0755")
    if fact(f"test -e {venv}/bin/python && echo yes") != "yes":
        server.shell(name="Create the virtualenv", commands=[f"python3 -m venv {venv}"])
    installed = fact(f"cat {venv}/.wheel-stamp")
    code = []
    if installed != wheel_stamp:  # the wheels travel only when the wheel set changed
        for w in wheels:
            files.put(
                name=f"Copy wheel {w}",
                src=str(src / w),
                dest=f"{wheels_dir}/{w}",
                user="root",
                group="root",
                mode="0644",
            )
        for path in host.get_fact(FindFiles, path=wheels_dir, quote_path=True, name="*.whl") or []:
            if Path(path).name not in wheels:
                files.file(name=f"Remove stale wheel {Path(path).name}", path=path, present=False)
        code.append(
            server.shell(
                name="Install the app and its dependencies from the wheels, offline",
                commands=[
                    f"{venv}/bin/pip install -q --no-index --find-links {wheels_dir} "
                    "--upgrade grimbots",
                    f"{venv}/bin/pip install -q --no-index --no-deps --force-reinstall "
                    f"{wheels_dir}/{app_wheel}",
                ],
            )
        )
    files.put(
        name="Record the installed wheel set",
        src=io.StringIO(wheel_stamp + "\n"),
        dest=f"{venv}/.wheel-stamp",
        user="root",
        group="root",
        mode="0644",
    )

    # configure
    files.directory(
        name="Create the configuration directory",
        path=v["grimbots_config_dir"],
        user="root",
        group=user,
        mode="0750",
    )
    files.directory(
        name="Create the state directory",
        path=v["grimbots_data_dir"],
        user=user,
        group=user,
        mode="0750",
    )
    env = put_template(
        "app/templates/grimbots.env.j2",
        f"{v['grimbots_config_dir']}/grimbots.env",
        v,
        "root",
        user,
        "0640",
    )
    launcher = put_template(
        "app/templates/grimbots-worker.sh.j2",
        f"{v['grimbots_home']}/bin/grimbots-worker",
        v,
        "root",
        "root",
        "0755",
    )
    put_template(
        "app/templates/grimbots-manage.sh.j2",
        "/usr/local/bin/grimbots-manage",
        v,
        "root",
        "root",
        "0755",
    )
    redis_conf = None
    if v["grimbots_local_redis"]:
        redis_conf = put_template(
            "app/templates/redis.conf.j2", "/etc/redis/redis.conf", v, "redis", "redis", "0640"
        )
    web_unit = put_template(
        "app/templates/grimbots-web.service.j2",
        "/etc/systemd/system/grimbots-web.service",
        v,
        "root",
        "root",
        "0644",
    )
    worker_unit = put_template(
        "app/templates/grimbots-worker@.service.j2",
        "/etc/systemd/system/grimbots-worker@.service",
        v,
        "root",
        "root",
        "0644",
    )
    schema_wanted = sha1(f"{wheel_stamp} {v['grimbots_database_url']}")
    schema_file = f"{v['grimbots_data_dir']}/.schema-stamp"
    schema_have = fact(f"cat {schema_file}")
    if schema_have != schema_wanted:
        server.shell(
            name="Apply the database migrations",
            commands=["/usr/local/bin/grimbots-manage db upgrade"],
        )
    files.put(
        name="Record the code and database the schema is migrated for",
        src=io.StringIO(schema_wanted + "\n"),
        dest=schema_file,
        user="root",
        group="root",
        mode="0644",
    )

    # handlers (in the role's order), then the services' state
    systemd.daemon_reload(name="Reload systemd units", _if=any_changed(web_unit, worker_unit))
    if redis_conf is not None:
        systemd.service(
            name="Restart redis",
            service="redis-server",
            running=True,
            restarted=True,
            _if=redis_conf.did_change,
        )
    systemd.service(
        name="Restart grimbots web",
        service="grimbots-web",
        running=True,
        restarted=True,
        _if=any_changed(env, web_unit),
    )
    if code:
        systemd.service(
            name="Reload grimbots web", service="grimbots-web", running=True, reloaded=True
        )
    restart_workers = any_changed(env, launcher, worker_unit, *code)
    for instance in instances:
        systemd.service(
            name=f"Restart grimbots-worker@{instance}",
            service=f"grimbots-worker@{instance}",
            running=True,
            restarted=True,
            _if=restart_workers,
        )

    if v["grimbots_local_redis"]:
        systemd.service(
            name="Start and enable the local Redis",
            service="redis-server",
            running=True,
            enabled=True,
        )
    systemd.service(
        name="Start and enable the web service", service="grimbots-web", running=True, enabled=True
    )
    for instance in instances:
        systemd.service(
            name=f"Start and enable grimbots-worker@{instance}",
            service=f"grimbots-worker@{instance}",
            running=True,
            enabled=True,
        )
    wanted = {f"grimbots-worker@{i}.service" for i in instances}
    enabled = {
        Path(p).name
        for p in host.get_fact(
            FindLinks, path="/etc/systemd/system/multi-user.target.wants", quote_path=True
        )
        or []
        if Path(p).name.startswith("grimbots-worker@")
    }
    active = {
        line.split()[0]
        for line in fact(
            "systemctl list-units --plain --no-legend --state=active 'grimbots-worker@*'"
        ).splitlines()
        if line.strip()
    }
    for unit in sorted((enabled | active) - wanted):
        systemd.service(
            name=f"Stop and disable {unit}, no longer in the inventory",
            service=unit,
            running=False,
            enabled=False,
        )


_v = load(ALL_ROLES).vars(host.name)
if host.name == host.inventory.get_group("app")[0].name:
    common(_v)
    app(_v)
