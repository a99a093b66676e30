"""Phase 2 with pyinfra: the same hosts as playbooks/phase2.yml (roles patroni + app_database).

    pyinfra -y --limit db --limit app deploy/inventory.py deploy/phase2.py

One run from empty db hosts: operations run in the order written, every db host's before the
app hosts' ones, and the steps that depend on earlier ones (the database ensure, the etcd leader
mover, the move off SQLite) decide at execution time through the host-side helpers' --check.
Renders the roles' own templates with Ansible's Templar and variables (grimbots_infra), so that a
run of either tool after the other changes nothing (scripts/test-lab.sh checks this both ways).
"""

from __future__ import annotations

import io
from pathlib import Path

import yaml
from pyinfra import host
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from grimbots_infra.inventory import ROLES_DIR, load
from grimbots_infra.phases import ALL_ROLES
from grimbots_infra.pyinfra_ops import barrier, fact, host_step, put_drop_in, put_template
from grimbots_infra.render import render as _render
from grimbots_infra.render import sha1

LIB = "/usr/local/lib/grimbots"


def render(template: str, v) -> str:
    return _render(*template.split("/templates/"), v)


def address(v, name: str) -> str:
    other = load(ALL_ROLES).vars(name)
    return other.get("patroni_address") or other["ansible_host"]


def contains(current, desired) -> bool:
    """True when every key of desired has the same value in current (patronictl's patch)."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(
            contains(current.get(k), val) for k, val in desired.items()
        )
    return current == desired


def preflight(v: dict) -> None:
    members = list(v["groups"][v["patroni_group"]])
    if len(members) < 3 or len(members) % 2 == 0:
        raise SystemExit(
            f"etcd needs an odd number (3+) of members; {v['patroni_group']}: {members}"
        )
    knob = int(v["patroni_recovery_seconds"])
    loop_wait = max(1, knob // 5)
    if knob < 8 or loop_wait + 2 * ((knob - loop_wait) // 2) > knob:
        raise SystemExit(f"patroni_recovery_seconds={knob} is too small: at least 8 seconds")
    for key in (
        "patroni_superuser_password",
        "patroni_replication_password",
        "patroni_rewind_password",
        "patroni_restapi_password",
        "patroni_app_password",
    ):
        if len(str(v.get(key) or "")) < 16:
            raise SystemExit(f"{host.name}: {key} must come from the vault (16+ characters)")
    if len({address(v, m) for m in members}) != len(members):
        raise SystemExit(f"each host of {v['patroni_group']} needs its own patroni_address")


def patroni(v: dict) -> None:
    """roles/patroni."""
    preflight(v)
    members = list(v["groups"][v["patroni_group"]])
    endpoints = ",".join(f"http://{address(v, m)}:{v['patroni_etcd_client_port']}" for m in members)
    etcdctl = (
        f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} --dial-timeout=2s --command-timeout=3s"
    )
    healthy_before = fact(f"{etcdctl} endpoint health >/dev/null && echo yes") == "yes"
    etcd_state = fact("systemctl is-active etcd")
    patroni_state = fact("systemctl is-active patroni")
    config_dir = v["patroni_config_dir"]

    # install
    put_drop_in(
        "patroni/templates/createcluster.conf.j2",
        "/etc/postgresql-common/createcluster.d",
        "50-patroni.conf",
        v,
    )
    apt.packages(
        name="Install PostgreSQL 15, Patroni and etcd",
        packages=v["patroni_packages"],
        update=v["patroni_apt_update_cache"],
        cache_time=3600,
    )
    systemd.service(
        name="Keep Debian's postgresql service off",
        service="postgresql",
        running=False,
        enabled=False,
    )
    files.directory(name=f"Create {LIB}", path=LIB, user="root", group="root", mode="0755")
    for helper in (
        "patroni-validate-config",
        "patroni-ensure-database",
        "patroni-etcd-leader-away",
    ):
        files.put(
            name=f"Install {helper}",
            src=str(ROLES_DIR / "patroni" / "files" / helper),
            dest=f"{LIB}/{helper}",
            user="root",
            group="root",
            mode="0755",
        )
    put_template("patroni/templates/wait-etcd.sh.j2", f"{LIB}/wait-etcd", v, "root", "root", "0755")
    put_template(
        "patroni/templates/patronictl.sh.j2", "/usr/local/bin/patronictl", v, "root", "root", "0755"
    )

    # etcd
    files.directory(
        name="Create the etcd data directory",
        path=v["patroni_etcd_data_dir"],
        user="etcd",
        group="etcd",
        mode="0700",
    )
    etcd_env = put_template(
        "patroni/templates/etcd.env.j2", "/etc/default/etcd", v, "root", "root", "0644"
    )
    etcd_unit = put_drop_in(
        "patroni/templates/etcd.service.conf.j2",
        "/etc/systemd/system/etcd.service.d",
        "grimbots.conf",
        v,
    )
    systemd.daemon_reload(name="Reload systemd units", _if=etcd_unit.did_change)
    if healthy_before:
        server.shell(
            name="Restart etcd, one member at a time, each back in quorum before the next",
            commands=["systemctl restart etcd"],
            _serial=True,
            _if=any_changed(etcd_env, etcd_unit),
        )
    else:
        server.shell(
            name="Restart etcd without waiting for the other members",
            commands=["systemctl restart --no-block etcd"],
            _if=any_changed(etcd_env, etcd_unit),
        )
    systemd.service(name="Enable etcd", service="etcd", running=None, enabled=True)
    if etcd_state not in ("active", "activating"):
        server.shell(
            name="Start etcd without waiting for the other members",
            commands=["systemctl start --no-block etcd"],
        )
    if not healthy_before or etcd_state != "active":
        timeout = int(v["patroni_wait_timeout"])
        server.shell(
            name="Wait until every etcd member is healthy (quorum)",
            commands=[
                f"for i in $(seq {timeout // 3}); do {etcdctl} endpoint health >/dev/null 2>&1 "
                "&& exit 0; sleep 3; done; exit 1"
            ],
        )

    # configure
    files.directory(
        name="Create the parent of the data directory",
        path=str(Path(v["patroni_data_dir"]).parent),
        user="postgres",
        group="postgres",
        mode="0755",
    )
    files.directory(
        name="Create Patroni's configuration directory",
        path=config_dir,
        user="root",
        group="postgres",
        mode="0750",
    )
    dynamic = render("patroni/templates/dynamic.yml.j2", v)
    files.put(
        name="Write the cluster-wide settings applied through etcd",
        src=io.StringIO(dynamic),
        dest=f"{config_dir}/dynamic.yml",
        user="root",
        group="postgres",
        mode="0640",
    )
    put_template(
        "patroni/templates/app-database.json.j2",
        f"{config_dir}/app-database.json",
        v,
        "postgres",
        "postgres",
        "0600",
    )
    config = render("patroni/templates/config.yml.j2", v)
    config_path = f"{config_dir}/config.yml"
    config_changed = fact(f"sha1sum {config_path} | cut -c1-40") != sha1(config)
    if config_changed:
        staged = f"{config_dir}/.config.yml.pyinfra"
        files.put(
            name="Stage Patroni's configuration",
            src=io.StringIO(config),
            dest=staged,
            user="root",
            group="postgres",
            mode="0640",
        )
        server.shell(
            name="Check Patroni's configuration with patroni --validate-config, then install it",
            commands=[f"{LIB}/patroni-validate-config {staged} && mv -f {staged} {config_path}"],
        )
    files.file(
        name="Keep Patroni's configuration private",
        path=config_path,
        user="root",
        group="postgres",
        mode="0640",
    )
    patroni_unit = put_drop_in(
        "patroni/templates/patroni.service.conf.j2",
        "/etc/systemd/system/patroni.service.d",
        "grimbots.conf",
        v,
    )
    systemd.daemon_reload(name="Reload systemd units", _if=patroni_unit.did_change)
    if config_changed and patroni_state == "active":
        systemd.service(name="Reload patroni", service="patroni", running=True, reloaded=True)

    # service
    systemd.service(name="Enable and start Patroni", service="patroni", running=True, enabled=True)
    if patroni_state != "active":
        api = f"http://{address(v, host.name)}:{v['patroni_restapi_port']}"
        ready = (
            "import json,sys; m=json.load(sys.stdin)['members']; "
            f"sys.exit(0 if sum(x['role']=='leader' for x in m)==1 and len(m)=={len(members)} "
            "and all(x['state'] in ('running','streaming') for x in m) "
            "and sum(x['role']=='sync_standby' for x in m)>="
            f"{int(v['patroni_synchronous_node_count'])} "
            "else 1)"
        )
        server.shell(
            name="Wait for one leader, every member running and a synchronous standby",
            commands=[
                f"for i in $(seq {int(v['patroni_wait_timeout']) // 3}); do "
                f'curl -sf --max-time 3 {api}/cluster | python3 -c "{ready}" && exit 0; '
                "sleep 3; done; exit 1"
            ],
        )

    # database
    ensure = f"runuser -u postgres -- {LIB}/patroni-ensure-database {config_dir}/app-database.json"
    host_step(
        name="Create the app's role and database on the leader, or fix the password or owner",
        command=ensure,
        check=f"{ensure} --check",
    )
    away = f"{LIB}/patroni-etcd-leader-away"
    host_step(
        name="Keep etcd's leadership off the PostgreSQL leader",
        command=away,
        check=f"{away} --check",
    )
    if host.name == members[0]:
        current = yaml.safe_load(fact("/usr/local/bin/patronictl show-config")) or {}
        if not contains(current, yaml.safe_load(dynamic)):
            server.shell(
                name="Apply the cluster-wide settings (ttl, loop_wait, retry_timeout, sync mode)",
                commands=[
                    "/usr/local/bin/patronictl edit-config --force --apply "
                    f"{config_dir}/dynamic.yml"
                ],
            )


def app_database(v: dict) -> None:
    """roles/app_database."""
    config_dir = v["app_database_config_dir"]
    if fact(f"test -f {config_dir}/grimbots.env && echo yes") != "yes":
        host.noop(f"{config_dir}/grimbots.env is missing: the app does not run here; skipping")
        return
    password = str(v["app_database_password"])
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_.~-")
    if len(password) < 16 or not set(password) <= allowed:
        raise SystemExit("app_database_password: 16+ characters among A-Z a-z 0-9 + / = _ . ~ -")
    put_template(
        "app_database/templates/database.env.j2",
        f"{config_dir}/postgresql.env",
        v,
        "root",
        v["app_database_app_user"],
        "0640",
    )
    script = "/usr/local/sbin/grimbots-switch-database"
    put_template(
        "app_database/templates/grimbots-switch-database.sh.j2", script, v, "root", "root", "0750"
    )
    flags = "" if host.name == v["app_database_migrate_host"] else " --no-migrate"
    host_step(
        name="Stop writers, back up and move SQLite into PostgreSQL, switch the app (once)",
        command=f"{script}{flags}",
        check=f"{script} --check",
    )


_inv = load(ALL_ROLES)
_v = _inv.vars(host.name)
if host.name in _inv.group("db"):
    patroni(_v)
barrier(name="Every db host is done before an app host starts")
if host.name in _inv.group("app"):
    # The play vars of playbooks/phase2.yml's app play.
    password = "{{ hostvars[groups['db'][0]].patroni_app_password }}"
    app_database(_inv.vars(host.name, {"app_database_password": password}))
