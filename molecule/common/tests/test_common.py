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
