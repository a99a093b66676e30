"""A restart is never lost: a run that fails after a change and before the service stage leaves
the change's action recorded on the host, and the next run of the same tool does it.

The common role's journald setting is changed with a run told to stop before its service stage
(platform_fail_before_service), as a mirror error or a timeout would; journald must not have
restarted, the host must hold the pending restart; the next run, the change already on disk,
must restart journald and clear the record. A last run puts the default back. scripts/test-lab.sh
runs the case of the pass's tool (-k ansible / -k pyinfra).
"""

from __future__ import annotations

import json

import pytest

import grimbots_lab as lab

JOURNALD_CONF = "/etc/systemd/journald.conf.d/60-grimbots.conf"
CHANGED = {"common_journald_max_use": "1536M"}


def _started(app_host) -> int:
    """systemd-journald's last start, on the host's monotonic clock (microseconds)."""
    out = app_host.check_output("systemctl show -p ActiveEnterTimestampMonotonic --value "
                                "systemd-journald")  # fmt: skip
    return int(out)


def _pending(app_host, app_vars) -> dict:
    path = (
        f"{app_vars['platform_pending_actions_dir']}/"
        f"{app_vars['platform_pending_actions_name']}.fact"
    )
    text = app_host.file(path).content_string if app_host.file(path).exists else "{}"
    return json.loads(text or "{}")


def _run(tool: str, **extra):
    # Ansible runs only the common role's tasks (its tags); pyinfra's phase-1 deploy is short.
    return lab.deploy(tool, 1, extra_vars=extra or None, ansible_tags="common")


@pytest.mark.parametrize("tool", ["ansible", "pyinfra"])
def test_a_failed_run_leaves_its_restart_to_the_next_run(tool, app_host, app_vars):
    assert "SystemMaxUse=1G" in app_host.file(JOURNALD_CONF).content_string, "not the default"
    before = _started(app_host)
    try:
        failed = _run(tool, **CHANGED, platform_fail_before_service="common")
        out = failed.stdout + failed.stderr
        assert failed.returncode != 0, out[-3000:]
        assert "platform_fail_before_service" in out, out[-3000:]
        assert "SystemMaxUse=1536M" in app_host.file(JOURNALD_CONF).content_string
        assert _started(app_host) == before, "journald restarted although the run stopped before"
        assert _pending(app_host, app_vars).get("common") == ["restart-journald"]

        rerun = _run(tool, **CHANGED)
        assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
        restarted = _started(app_host)
        assert restarted > before, "the rerun found the file unchanged and lost the restart"
        assert "common" not in _pending(app_host, app_vars)
    finally:  # the default back, whatever failed above, for the suites that follow
        back = _run(tool)
    assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]
    assert "SystemMaxUse=1G" in app_host.file(JOURNALD_CONF).content_string
    assert _started(app_host) > restarted
    assert _pending(app_host, app_vars) == {}
