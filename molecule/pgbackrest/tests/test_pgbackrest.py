"""The pgbackrest role on three db containers (Patroni, archiving on) and a backup container:
the stanza in an encrypted repository, `pgbackrest check`, a full backup from the timer's
service, a switched WAL segment in the repository, and a TLS server that lets in only the
peers' certificates."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import testinfra
import testinfra.utils.ansible_runner

from grimbots_infra.inventory import platform_ports

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("backup")

PORTS = platform_ports(INVENTORY)
DB_HOSTS = {
    "grimbots-molecule-pgbr-db1": "10.80.0.21",
    "grimbots-molecule-pgbr-db2": "10.80.0.22",
    "grimbots-molecule-pgbr-db3": "10.80.0.23",
}
BACKUP_ADDRESS = "10.80.0.31"
STANZA = "grimbots"
REPO = "/var/lib/pgbackrest"
PKI = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "pki"
# openssl's header of an encrypted file: pgBackRest's aes-256-cbc files start with it.
ENCRYPTED = b"Salted__"


def _db(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def _leader():
    for name, address in DB_HOSTS.items():
        url = f"http://{address}:{PORTS['patroni_rest']}/leader"
        db = _db(name)
        if db.run(f"curl -sf -o /dev/null --max-time 3 {url}").rc == 0:
            return db
    raise AssertionError("no Patroni leader")


def _pgbackrest(host, args: str):
    return host.run(f"runuser -u postgres -- pgbackrest --stanza={STANZA} {args}")


def _info(host) -> dict:
    return json.loads(_pgbackrest(host, "--output=json info").stdout)[0]


def _head(host, path: str) -> bytes:
    return bytes.fromhex(host.check_output(f"head -c 8 {path} | od -An -tx1 | tr -d ' \\n'"))


def test_stanza_exists_in_a_repository_encrypted_with_aes_256_cbc(host):
    info = _info(host)
    assert info["status"]["code"] in (0, 2), info["status"]  # ok, or no backup yet
    assert info["cipher"] == "aes-256-cbc"
    for name in ("archive/grimbots/archive.info", "backup/grimbots/backup.info"):
        assert _head(host, f"{REPO}/{name}") == ENCRYPTED, name


def test_pgbackrest_check_passes(host):
    result = _pgbackrest(host, "check")
    assert result.rc == 0, result.stderr


def test_timers_are_enabled_and_waiting(host):
    for timer in ("pgbackrest-full.timer", "pgbackrest-diff.timer"):
        assert host.service(timer).is_enabled, timer
        assert host.service(timer).is_running, timer


def test_the_metrics_collector_writes_the_repositorys_state_for_node_exporter(host):
    timer = host.service("grimbots-pgbackrest-metrics.timer")
    assert timer.is_enabled and timer.is_running
    result = host.run("systemctl start grimbots-pgbackrest-metrics.service")
    assert result.rc == 0, host.run("journalctl -u grimbots-pgbackrest-metrics -n 30").stdout
    prom = host.file("/var/lib/prometheus/node-exporter/grimbots_pgbackrest.prom")
    assert prom.mode == 0o644
    samples = dict(
        line.rsplit(" ", 1) for line in prom.content_string.splitlines() if line[:1] != "#"
    )
    assert samples["grimbots_pgbackrest_info_success"] == "1", samples
    assert samples['grimbots_pgbackrest_backup_max_age_seconds{stanza="grimbots"}'] == "93600"
    assert samples['grimbots_pgbackrest_stanza_status_code{stanza="grimbots"}'] in ("0", "2")
    stops = [b["timestamp"]["stop"] for b in _info(host).get("backup", [])]
    newest = 'grimbots_pgbackrest_backup_last_timestamp_seconds{stanza="grimbots",type="full"}'
    assert samples.get(newest) == (str(max(stops)) if stops else None), samples


def test_full_backup_from_the_timers_service_is_listed_by_info(host):
    result = host.run("systemctl start pgbackrest-backup@full.service")
    assert result.rc == 0, host.run("journalctl -u pgbackrest-backup@full --no-pager -n 30").stdout
    backups = _info(host)["backup"]
    assert backups and backups[-1]["type"] == "full", backups
    assert backups[-1]["error"] is False


def test_a_switched_wal_segment_lands_encrypted_in_the_repository(host):
    leader = _leader()
    psql = "runuser -u postgres -- psql -h /var/run/postgresql -XAtqc"
    leader.check_output(f"{psql} 'CREATE TABLE IF NOT EXISTS pgbr_probe (at timestamptz)'")
    leader.check_output(f"{psql} 'INSERT INTO pgbr_probe VALUES (now())'")
    segment = leader.check_output(f"{psql} 'SELECT pg_walfile_name(pg_current_wal_lsn())'")
    leader.check_output(f"{psql} 'SELECT pg_switch_wal()'")
    pattern = f"{REPO}/archive/{STANZA}/15-*/{segment[:16]}/{segment}-*"
    deadline = time.monotonic() + 60
    while (found := host.run(f"ls {pattern}")).rc != 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert found.rc == 0, f"{segment} not archived: {found.stderr}"
    assert _head(host, found.stdout.split()[0]) == ENCRYPTED


@pytest.fixture(scope="module")
def intruders(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Client certificates the backup host's server must refuse: one from another CA, one from
    the platform's CA whose common name no tls-server-auth entry names."""
    tmp = tmp_path_factory.mktemp("intruders")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *key, "-days", "1", "-subj", "/CN=grimbots-molecule-pgbr-db1",
        "-keyout", tmp / "other-ca.key", "-out", tmp / "other-ca.crt")  # fmt: skip
    run("req", *key, "-subj", "/CN=intruder", "-keyout", tmp / "cn.key", "-out", tmp / "cn.csr")
    run("x509", "-req", "-in", tmp / "cn.csr", "-CA", PKI / "ca.crt", "-CAkey", PKI / "ca.key",
        "-days", "1", "-out", tmp / "cn.crt")  # fmt: skip
    return {
        name: ((tmp / f"{name}.crt").read_text(), (tmp / f"{name}.key").read_text())
        for name in ("other-ca", "cn")
    }


@pytest.mark.parametrize(("name", "error"), [("other-ca", "unknown ca"), ("cn", "access denied")])
def test_the_repository_refuses_a_client_certificate_it_does_not_trust(intruders, name, error):
    db = _db("grimbots-molecule-pgbr-db1")
    cert, key = intruders[name]
    db.check_output(f"install -d -o postgres -m 0700 /tmp/intruder-{name}")
    for suffix, pem in (("crt", cert), ("key", key)):
        db.check_output(
            f"umask 077 && cat > /tmp/intruder-{name}/{suffix} <<'EOF'\n{pem}EOF\n"
            f"chown postgres /tmp/intruder-{name}/{suffix}"
        )
    result = _pgbackrest(
        db,
        f"--repo1-host-cert-file=/tmp/intruder-{name}/crt "
        f"--repo1-host-key-file=/tmp/intruder-{name}/key info",
    )
    assert error in result.stdout and "cipher: none" in result.stdout, result.stdout
    # The same command with the host's own certificate reaches the repository.
    assert _info(db)["cipher"] == "aes-256-cbc"


def test_the_tls_server_listens_on_the_private_address_only(host):
    listening = host.socket(f"tcp://{BACKUP_ADDRESS}:{PORTS['pgbackrest']}")
    assert listening.is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORTS['pgbackrest']}").is_listening
