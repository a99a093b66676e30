"""Phase 1 files: modes and owners, and no secret in any process' arguments."""

import pytest


@pytest.mark.parametrize(
    ("path", "user", "group", "mode"),
    [
        ("/etc/grimbots", "root", "grimbots", 0o750),
        ("/etc/grimbots/grimbots.env", "root", "grimbots", 0o640),
        ("/etc/redis/redis.conf", "redis", "redis", 0o640),
        ("/var/lib/grimbots", "grimbots", "grimbots", 0o750),
        ("/var/lib/grimbots/grimbots.db", "grimbots", "grimbots", None),
        ("/etc/systemd/system/grimbots-web.service", "root", "root", 0o644),
        ("/etc/systemd/system/grimbots-worker@.service", "root", "root", 0o644),
        ("/opt/grimbots/bin/grimbots-worker", "root", "root", 0o755),
        ("/opt/grimbots/venv/bin/grimbots", "root", "root", None),
    ],
)
def test_files_have_their_owner_and_mode(app_host, path, user, group, mode):
    f = app_host.file(path)
    assert f.exists, path
    assert (f.user, f.group) == (user, group)
    if mode is not None:
        assert f.mode == mode, f"{path}: {oct(f.mode)}"


def test_the_service_user_cannot_write_the_code(app_host):
    assert app_host.run("runuser -u grimbots -- test -w /opt/grimbots/venv/bin").rc != 0


def test_no_secret_appears_in_any_process_arguments(app_host, secrets):
    # The command reads every /proc/<pid>/cmdline; the secrets are compared on the controller,
    # so this test itself never puts one on the host's command line.
    out = app_host.check_output(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done"
    )
    assert len(out.splitlines()) > 20  # web, 11 workers, redis ...
    for secret in secrets:
        assert secret not in out


def test_the_web_unit_is_sandboxed(app_host):
    props = app_host.check_output(
        "systemctl show grimbots-web -p NoNewPrivileges -p ProtectSystem -p ProtectHome "
        "-p PrivateTmp -p PrivateUsers -p Restart -p RestartUSec -p User"
    )
    values = dict(line.split("=", 1) for line in props.splitlines())
    assert values["NoNewPrivileges"] == "yes"
    assert values["ProtectSystem"] == "strict"
    assert values["ProtectHome"] == "yes"
    assert values["PrivateTmp"] == "yes"
    assert values["PrivateUsers"] == "no"
    assert values["Restart"] == "always"
    assert values["User"] == "grimbots"
