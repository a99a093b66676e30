"""Phase 1 files: modes and owners, and no secret in any process' arguments."""

import pytest


# Paths and the user from the app host's variables (the platform contract, as the role got them).
@pytest.mark.parametrize(
    ("path", "user", "group", "mode"),
    [
        ("{grimbots_config_dir}", "root", "{grimbots_user}", 0o750),
        ("{grimbots_config_dir}/grimbots.env", "root", "{grimbots_user}", 0o640),
        ("{grimbots_config_dir}/database.env", "root", "{grimbots_user}", 0o640),
        ("/etc/redis/redis.conf", "redis", "redis", 0o640),
        ("{grimbots_data_dir}", "{grimbots_user}", "{grimbots_user}", 0o750),
        ("{grimbots_sqlite_path}", "{grimbots_user}", "{grimbots_user}", None),
        ("/etc/systemd/system/grimbots-web.service", "root", "root", 0o644),
        ("/etc/systemd/system/grimbots-worker@.service", "root", "root", 0o644),
        ("{grimbots_home}/bin/grimbots-worker", "root", "root", 0o755),
        ("{grimbots_venv}/bin/grimbots", "root", "root", None),
    ],
)
def test_files_have_their_owner_and_mode(app_host, app_vars, path, user, group, mode):
    path, user, group = (x.format_map(app_vars) for x in (path, user, group))
    f = app_host.file(path)
    assert f.exists, path
    assert (f.user, f.group) == (user, group)
    if mode is not None:
        assert f.mode == mode, f"{path}: {oct(f.mode)}"


def test_the_service_user_cannot_write_the_code(app_host, app_vars):
    user, venv = app_vars["grimbots_user"], app_vars["grimbots_venv"]
    assert app_host.run(f"runuser -u {user} -- test -w {venv}/bin").rc != 0


def test_no_secret_appears_in_any_process_arguments(app_host, secrets):
    # The command reads every /proc/<pid>/cmdline; the secrets are compared on the controller,
    # so this test itself never puts one on the host's command line.
    out = app_host.check_output(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done"
    )
    assert len(out.splitlines()) > 20  # web, 11 workers, redis ...
    for secret in secrets:
        assert secret not in out


def test_the_web_unit_is_sandboxed(app_host, app_vars):
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
    assert values["User"] == app_vars["grimbots_user"]
