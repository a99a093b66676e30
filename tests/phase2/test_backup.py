"""Phase 2 backups on the lab (roles/pgbackrest): the stanza in an encrypted repository on the
backup host, a full backup from the timer's service listed by `pgbackrest info`, a switched WAL
segment archived from the leader, and the db hosts' TLS servers refusing a client that the
platform's CA did not sign. Each test prints its time."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import grimbots_lab as lab2

# openssl's header of an encrypted file: pgBackRest's aes-256-cbc files start with it.
ENCRYPTED = "53616c7465645f5f"  # b"Salted__" in hex
PSQL = "runuser -u postgres -- psql -h /var/run/postgresql -XAtqc"


@pytest.fixture(scope="module")
def backup(lab_db) -> dict:
    return lab_db.hosts[lab_db.groups["backup"][0]]


@pytest.fixture(scope="module")
def settings(lab_db, backup) -> dict:
    v = lab_db.vars(lab_db.groups["backup"][0])
    return {k: v[k] for k in ("pgbackrest_stanza", "pgbackrest_repo_path", "pgbackrest_user")}


@pytest.fixture(autouse=True)
def timed(request) -> Iterator[None]:
    start = time.monotonic()
    yield
    print(f"\n{request.node.name}: {time.monotonic() - start:.1f} s")


def pgbackrest(host: dict, settings: dict, args: str):
    return lab2.ssh(
        host,
        f"runuser -u {settings['pgbackrest_user']} -- pgbackrest "
        f"--stanza={settings['pgbackrest_stanza']} {args}",
    )


def info(host: dict, settings: dict) -> dict:
    run = pgbackrest(host, settings, "--output=json info")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)[0]


def head(host: dict, path: str) -> str:
    return lab2.ssh(host, f"head -c 8 {path} | od -An -tx1 | tr -d ' \\n'").stdout


def test_the_stanza_exists_in_a_repository_encrypted_at_rest(backup, settings):
    found = info(backup, settings)
    assert found["status"]["code"] in (0, 2), found["status"]  # ok, or no backup yet
    assert found["cipher"] == "aes-256-cbc"
    stanza, repo = settings["pgbackrest_stanza"], settings["pgbackrest_repo_path"]
    for name in (f"archive/{stanza}/archive.info", f"backup/{stanza}/backup.info"):
        assert head(backup, f"{repo}/{name}") == ENCRYPTED, name


def test_pgbackrest_check_passes_and_the_timers_wait(backup, settings):
    run = pgbackrest(backup, settings, "check")
    assert run.returncode == 0, run.stdout + run.stderr
    timers = lab2.ssh(backup, "systemctl is-active pgbackrest-full.timer pgbackrest-diff.timer")
    assert timers.stdout.split() == ["active", "active"], timers.stdout


def test_a_full_backup_from_the_timers_service_is_listed_by_info(backup, settings):
    before = len(info(backup, settings)["backup"])
    start = time.monotonic()
    run = lab2.ssh(backup, "systemctl start pgbackrest-backup@full.service", timeout=600)
    journal = lab2.ssh(backup, "journalctl -u pgbackrest-backup@full --no-pager -n 30").stdout
    assert run.returncode == 0, run.stderr + journal
    print(f"\nfull backup: {time.monotonic() - start:.1f} s")
    backups = info(backup, settings)["backup"]
    assert len(backups) > before, backups
    assert backups[-1]["type"] == "full" and backups[-1]["error"] is False, backups[-1]


def test_a_switched_wal_segment_on_the_leader_arrives_encrypted_in_the_repository(
    lab_db, backup, settings, healthy_cluster
):
    (name,) = lab2.leaders(healthy_cluster)
    leader = lab_db.hosts[name]
    # A record first: pg_switch_wal switches only a segment that holds something.
    emit = "SELECT pg_logical_emit_message(false, 'grimbots-backup-test', now()::text)"
    switch = "SELECT pg_walfile_name(pg_switch_wal())"
    run = lab2.ssh(leader, f'{PSQL} "{emit}" && {PSQL} "{switch}"')
    assert run.returncode == 0, run.stderr
    segment = run.stdout.split()[-1]
    stanza, repo = settings["pgbackrest_stanza"], settings["pgbackrest_repo_path"]
    pattern = f"{repo}/archive/{stanza}/15-*/{segment[:16]}/{segment}-*"
    start = time.monotonic()
    found = lab2.wait_for(
        lambda: (r := lab2.ssh(backup, f"ls {pattern}")).returncode == 0 and r.stdout.split(),
        timeout=60,
    )
    assert found, f"{segment} from {name} did not reach {repo} within 60 s"
    print(f"\nsegment {segment} archived in {time.monotonic() - start:.1f} s")
    assert head(backup, found[0]) == ENCRYPTED
    archive = info(backup, settings)["archive"][-1]
    assert archive["max"] >= segment, archive


def foreign_client(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A certificate with an allowed common name, self-signed: no CA of the platform's signed it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "client.crt", tmp_path / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def refusal(address: str, port: int, client: tuple[Path, Path]) -> str:
    """The TLS error of a session with a db host's pgBackRest server (from the control machine,
    an admin source of the lab's firewall); "" when the server answered."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server's side is under test, not the client's
    context.load_cert_chain(*client)
    try:
        with (
            socket.create_connection((address, port), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            data = tls.recv(64)  # TLS 1.3: a refused certificate shows on the first read
    except ssl.SSLError as exc:
        return str(exc)
    except (ConnectionResetError, BrokenPipeError) as exc:
        return f"reset: {exc}"
    return "" if data else "closed without an error"


def test_a_db_hosts_tls_server_refuses_a_client_the_platform_ca_did_not_sign(
    lab_db, backup, tmp_path
):
    """The backup host's own name, on a certificate of another CA: the handshake fails."""
    db = lab_db.hosts[lab_db.groups["db"][0]]
    cert = foreign_client(tmp_path, lab_db.groups["backup"][0])
    error = refusal(db["ansible_host"], lab2.port("pgbackrest"), cert)
    assert error, f"{lab_db.groups['db'][0]}'s pgBackRest server let a foreign client in"
    print(f"\nrefused: {error}")
