"""The common role on one host: service user, limits, journald retention."""

import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")


def test_service_user_exists_without_a_login_shell(host):
    user = host.user("grimbots")
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert host.file("/var/lib/grimbots").mode == 0o750


def test_service_user_sessions_may_open_many_files(host):
    limits = host.file("/etc/security/limits.d/60-grimbots.conf")
    assert limits.mode == 0o644
    assert "grimbots hard nofile 65536" in limits.content_string


def test_journald_keeps_logs_persistently_with_a_bound(host):
    conf = host.file("/etc/systemd/journald.conf.d/60-grimbots.conf").content_string
    assert "Storage=persistent" in conf
    assert "SystemMaxUse=1G" in conf
    assert host.service("systemd-journald").is_running


def test_time_sync_is_left_to_the_container_host(host):
    assert not host.file("/etc/chrony/sources.d/grimbots.sources").exists
