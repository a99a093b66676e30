"""The platform's private CA (roles/common/pki.py): made once, keys encrypted at rest, a host's
certificate issued again only when it is due, one CA however many processes ask at once."""

from __future__ import annotations

import multiprocessing
import subprocess

import pytest
from cryptography import x509

from grimbots_infra import roles

pki = roles.module("common", "pki")
PASS = "TEST-ONLY-tls-0123456789abcdef"


def issue(folder, host="db1", addresses=("10.0.0.21",), **kw):
    return pki.issue(folder, host, PASS, [host, "localhost"], [*addresses, "127.0.0.1"], **kw)


def test_a_host_certificate_verifies_against_the_ca_for_its_names_and_keys_stay_encrypted(
    tmp_path,
):
    got = issue(tmp_path)
    (tmp_path / "out").mkdir()
    for name, text in (("ca.crt", got.ca_certificate), ("host.crt", got.certificate)):
        (tmp_path / "out" / name).write_text(text)
    for check in (["-verify_hostname", "db1"], ["-verify_ip", "10.0.0.21"]):
        done = subprocess.run(
            [
                "openssl",
                "verify",
                *check,
                "-CAfile",
                tmp_path / "out/ca.crt",
                tmp_path / "out/host.crt",
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    for key in (tmp_path / "ca.key", tmp_path / "hosts/db1.key"):
        text = key.read_text()
        assert text.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), key
        assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert got.key.startswith("-----BEGIN PRIVATE KEY-----")


def test_a_second_run_returns_the_same_certificate_and_writes_nothing(tmp_path):
    first = issue(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.crt")}
    assert issue(tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.crt")} == stamps


def test_new_addresses_or_too_few_days_left_issue_again_with_the_same_key_and_ca(tmp_path):
    first = issue(tmp_path)
    moved = issue(tmp_path, addresses=("10.0.0.99",))
    assert moved.certificate != first.certificate
    assert (moved.key, moved.ca_certificate) == (first.key, first.ca_certificate)
    sans = x509.load_pem_x509_certificate(moved.certificate.encode()).extensions
    ips = sans.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.0.99" in {str(i) for i in ips.get_values_for_type(x509.IPAddress)}
    # 365 days left is fewer than 400 - 30: due again.
    assert issue(tmp_path, addresses=("10.0.0.99",), days=400, renew_days=370) != moved
    again = issue(tmp_path, addresses=("10.0.0.99",), days=400, renew_days=30)
    assert issue(tmp_path, addresses=("10.0.0.99",), days=400, renew_days=30) == again


def test_a_wrong_passphrase_or_a_lone_ca_file_stops_the_run_naming_what_to_fix(tmp_path):
    issue(tmp_path)
    with pytest.raises(pki.PkiError, match="common_tls_key_passphrase"):
        pki.issue(tmp_path, "db1", "another-passphrase-0123456789", ["db1"], [])
    (tmp_path / "ca.key").unlink()
    with pytest.raises(pki.PkiError, match="ca.crt and ca.key go together"):
        issue(tmp_path)


def _issue_ca(folder: str) -> str:
    return issue(folder, host=f"h{multiprocessing.current_process().pid}").ca_certificate


def test_many_processes_at_once_make_one_ca(tmp_path):
    """Ansible's forks each render a host's templates at the same moment."""
    with multiprocessing.get_context("fork").Pool(6) as pool:
        cas = pool.map(_issue_ca, [str(tmp_path)] * 12)
    assert len(set(cas)) == 1


def test_each_address_is_also_a_dns_name_for_clients_that_match_names_only(tmp_path):
    """pgBackRest 2.45 checks the address it connects to against DNS names and the CN only:
    the private address must be there as a DNS name too (and stays an IP entry)."""
    got = issue(tmp_path)
    sans = x509.load_pem_x509_certificate(got.certificate.encode()).extensions
    alt = sans.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"db1", "localhost", "10.0.0.21"} <= set(alt.get_values_for_type(x509.DNSName))
    assert "10.0.0.21" in {str(i) for i in alt.get_values_for_type(x509.IPAddress)}
