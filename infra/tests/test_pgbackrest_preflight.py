"""The pgbackrest role's preflight: the repository's passphrase, the hosts' certificates (signed
by the CA, named as tls-server-auth expects, the address as a DNS name for pgBackRest 2.45),
the backup host off the db group and the archive_command Patroni must run."""

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from grimbots_infra import preflight

PEM = serialization.Encoding.PEM


def _cert(name: str, issuer_key, issuer_name: str, sans: list[x509.GeneralName], ca: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    key_pem = key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(PEM).decode(), key_pem, key


@pytest.fixture(scope="module")
def pki() -> dict:
    ca_pem, _, ca_key = _cert("test-ca", None, "test-ca", [], ca=True)
    out = {"ca": ca_pem}
    for host, address in (("backup1", "10.0.0.9"), ("db1", "10.0.0.1")):
        sans = [x509.DNSName(address), x509.IPAddress(ipaddress.ip_address(address))]
        out[host] = _cert(host, ca_key, "test-ca", sans, ca=False)[:2]
    out["ip-only"] = _cert(
        "backup1", ca_key, "test-ca", [x509.IPAddress(ipaddress.ip_address("10.0.0.9"))], False
    )[:2]
    out["other-ca"] = _cert("backup1", None, "backup1", [x509.DNSName("10.0.0.9")], False)[:2]
    return out


def values(pki: dict, host: str = "backup1", cert: str | None = None, **overrides) -> dict:
    cert_pem, key_pem = pki[cert or host]
    base = {
        "pgbackrest_group": "backup",
        "pgbackrest_db_group": "db",
        "groups": {"backup": ["backup1"], "db": ["db1", "db2", "db3"]},
        "hostvars": {},
        "pgbackrest_stanza": "grimbots",
        "pgbackrest_cipher_pass": "c" * 24,
        "pgbackrest_cipher_type": "aes-256-cbc",
        "pgbackrest_retention_full_type": "count",
        "pgbackrest_retention_full": 2,
        "pgbackrest_retention_diff": 6,
        "pgbackrest_tls_ca_cert": pki["ca"],
        "pgbackrest_tls_cert": cert_pem,
        "pgbackrest_tls_key": key_pem,
        "pgbackrest_tls_name": host,
        "pgbackrest_address": {"backup1": "10.0.0.9", "db1": "10.0.0.1"}[host],
        "patroni_archive_command": "pgbackrest --stanza=grimbots archive-push %p",
    }
    return {**base, **overrides}


def problems(v: dict, host: str = "backup1") -> list[str]:
    return preflight.check(["pgbackrest"], preflight.Inputs(host, v.__getitem__, lambda _: None))


def test_a_valid_backup_host_and_db_host_have_no_problem(pki):
    assert problems(values(pki)) == []
    assert problems(values(pki, "db1"), "db1") == []


@pytest.mark.parametrize("passphrase", ["", "short", "CHANGE-ME-pgbackrest-cipher"])
def test_an_empty_short_or_placeholder_passphrase_is_refused(pki, passphrase):
    (problem,) = problems(values(pki, pgbackrest_cipher_pass=passphrase))
    assert "pgbackrest_cipher_pass=(secret)" in problem
    assert not passphrase or passphrase not in problem  # a passphrase is never shown


def test_a_certificate_of_another_ca_is_refused(pki):
    (problem,) = problems(values(pki, cert="other-ca"))
    assert "not signed by pgbackrest_tls_ca_cert" in problem


def test_a_certificate_with_the_address_only_as_an_ip_entry_is_refused(pki):
    (problem,) = problems(values(pki, cert="ip-only"))
    assert "as a DNS name" in problem and "10.0.0.9" in problem


def test_a_common_name_other_than_the_tls_name_is_refused(pki):
    (problem,) = problems(values(pki, pgbackrest_tls_name="backup-one"))
    assert "common name" in problem and "backup-one" in problem


def test_a_key_of_another_certificate_is_refused(pki):
    (problem,) = problems(values(pki, pgbackrest_tls_key=pki["db1"][1]))
    assert "does not match" in problem


def test_a_backup_host_in_the_db_group_is_refused(pki):
    groups = {"backup": ["backup1"], "db": ["backup1", "db2", "db3"]}
    found = problems(values(pki, groups=groups))
    assert any("off the db hosts" in p for p in found), found


def test_a_db_host_without_the_archive_command_is_refused(pki):
    (problem,) = problems(values(pki, "db1", patroni_archive_command=""), "db1")
    assert "patroni_archive_command" in problem and "archive-push" in problem
