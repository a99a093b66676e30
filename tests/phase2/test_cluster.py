"""Phase 2 on the lab: etcd quorum, Patroni's leader and streaming replicas, REST API, secrets."""

import json

import grimbots_lab as lab2


def test_etcd_has_three_healthy_members(lab_db, db_names):
    db1 = lab_db.hosts[db_names[0]]
    etcd = lab2.port("etcd_client")
    endpoints = ",".join(f"http://{lab_db.hosts[n]['ansible_host']}:{etcd}" for n in db_names)
    health = lab2.ssh(db1, f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} endpoint health")
    assert health.returncode == 0, health.stderr
    assert (health.stdout + health.stderr).count("is healthy") == 3
    members = lab2.ssh(db1, "ETCDCTL_API=3 etcdctl member list -w json")
    listed = json.loads(members.stdout)["members"]
    assert sorted(m["name"] for m in listed) == sorted(db_names)


def test_one_leader_and_two_streaming_replicas_one_synchronous(lab_db, healthy_cluster):
    (leader,) = lab2.leaders(healthy_cluster)
    rows = lab2.ssh(
        lab_db.hosts[leader],
        "runuser -u postgres -- psql -h /var/run/postgresql -XAtqc "
        "'SELECT application_name, state, sync_state FROM pg_stat_replication'",
    )
    assert rows.returncode == 0, rows.stderr
    replicas = [line.split("|") for line in rows.stdout.split()]
    others = sorted(n for n in lab_db.groups["db"] if n != leader)
    assert sorted(r[0] for r in replicas) == others, replicas
    assert all(r[1] == "streaming" for r in replicas), replicas
    assert sorted(r[2] for r in replicas) == ["async", "sync"], replicas


def test_recovery_knob_reached_the_cluster(lab_db, db_names):
    config = lab2.rest(lab_db.hosts[db_names[0]]["ansible_host"], "/config")
    knob = lab_db.hosts[db_names[0]]["patroni_recovery_seconds"]
    assert config["ttl"] == knob
    assert config["loop_wait"] + 2 * config["retry_timeout"] <= config["ttl"]
    assert config["synchronous_mode"] is True
    assert config["postgresql"]["use_pg_rewind"] is True
    assert config["postgresql"]["use_slots"] is True


def test_patronictl_is_ready_for_the_operator_on_every_member(lab_db, db_names):
    for name in db_names:
        out = lab2.ssh(lab_db.hosts[name], "patronictl list -f json")
        assert out.returncode == 0, (name, out.stderr)
        assert sorted(m["Member"] for m in json.loads(out.stdout)) == sorted(db_names)


def test_rest_api_refuses_unsafe_methods_without_credentials(lab_db, db_names):
    address = lab_db.hosts[db_names[0]]["ansible_host"]
    run = lab2.ssh(
        lab_db.hosts[db_names[0]],
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 -X POST http://{address}:{lab2.port('patroni_rest')}/restart",
    )
    assert run.stdout == "401"


def test_replicas_report_a_timeline_so_metrics_parse(lab_db, db_names):
    for name in db_names:
        address = lab_db.hosts[name]["ansible_host"]
        run = lab2.ssh(
            lab_db.hosts[name],
            f"curl -sf --max-time 5 http://{address}:{lab2.port('patroni_rest')}/metrics",
        )
        assert run.returncode == 0
        assert "None" not in run.stdout, name
        timeline = [x for x in run.stdout.splitlines() if x.startswith("patroni_postgres_timeline")]
        assert timeline and float(timeline[0].split()[-1]) >= 1, name


def test_pg_hba_admits_only_the_db_and_app_hosts_with_scram(lab_db, db_names):
    config = lab2.ssh(lab_db.hosts[db_names[0]], "cat /etc/patroni/config.yml").stdout
    hba = [
        line.strip().strip("-").strip().strip('"')
        for line in config.split("\n  pg_hba:\n", 2)[2].split("\n\n")[0].splitlines()
    ]
    allowed = {lab_db.hosts[n]["ansible_host"] for n in lab_db.groups["db"] + lab_db.groups["app"]}
    for entry in hba:
        fields = entry.split()
        if fields[0] == "host":
            assert fields[-1] == "scram-sha-256", entry
            assert fields[-2].removesuffix("/32") in allowed | {"127.0.0.1"}, entry
    assert any(f.split()[:2] == ["local", "replication"] for f in hba), hba


def test_configuration_with_passwords_is_private_and_no_secret_is_on_a_command_line(
    lab_db, db_names, app1
):
    variables = lab_db.hosts[db_names[0]]
    secrets = [
        variables[k]
        for k in (
            "patroni_superuser_password",
            "patroni_replication_password",
            "patroni_rewind_password",
            "patroni_restapi_password",
            "patroni_app_password",
        )
    ]
    for name in db_names:
        stat = lab2.ssh(lab_db.hosts[name], "stat -c '%U:%G %a' /etc/patroni/config.yml")
        assert stat.stdout.strip() == "root:postgres 640"
    for host in [*(lab_db.hosts[n] for n in db_names), app1]:
        cmdlines = lab2.ssh(host, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '").stdout
        for secret in secrets:
            assert secret not in cmdlines, host["inventory_hostname"]
