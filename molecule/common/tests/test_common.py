"""The common role on one host: limits, journald retention, no time sync in a container."""

import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")


def test_every_session_may_open_many_files(host):
    limits = host.file("/etc/security/limits.d/60-grimbots.conf")
    assert limits.mode == 0o644
    assert "* hard nofile 65536" in limits.content_string


def test_journald_keeps_logs_persistently_with_a_bound(host):
    conf = host.file("/etc/systemd/journald.conf.d/60-grimbots.conf").content_string
    assert "Storage=persistent" in conf
    assert "SystemMaxUse=1G" in conf
    assert host.service("systemd-journald").is_running


def test_time_sync_is_left_to_the_container_host(host):
    assert not host.file("/etc/chrony/sources.d/grimbots.sources").exists


def test_the_host_has_its_key_and_a_certificate_of_the_platforms_ca(host):
    """The private CA's certificate, the host's certificate for its name, the key readable by
    ssl-cert only; openssl on the host verifies the chain and the purpose (server and client)."""
    key = host.file("/etc/grimbots/tls/host.key")
    assert (key.user, key.group, key.mode) == ("root", "ssl-cert", 0o640)
    assert "PRIVATE KEY" in key.content_string and "ENCRYPTED" not in key.content_string
    name = host.backend.get_hostname()
    for purpose in ("sslserver", "sslclient"):
        verify = host.run(
            "openssl verify -purpose %s -verify_hostname %s -CAfile %s %s",
            purpose,
            name,
            "/etc/grimbots/tls/ca.crt",
            "/etc/grimbots/tls/host.crt",
        )
        assert verify.rc == 0, verify.stdout + verify.stderr
    public = host.check_output("openssl pkey -in /etc/grimbots/tls/host.key -pubout")
    assert public == host.check_output("openssl x509 -in /etc/grimbots/tls/host.crt -noout -pubkey")


def test_the_certificates_expiry_is_written_for_node_exporter(host):
    prom = host.file("/var/lib/prometheus/node-exporter/grimbots_tls.prom").content_string
    lines = [x for x in prom.splitlines() if x.startswith("grimbots_tls_certificate_expiry")]
    assert {x.split('"')[1] for x in lines} == {
        "/etc/grimbots/tls/ca.crt",
        "/etc/grimbots/tls/host.crt",
    }
    assert all(float(x.split()[-1]) > 1.7e9 for x in lines)
