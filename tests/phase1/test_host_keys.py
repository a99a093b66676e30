"""A host whose SSH key changed stops both deploy tools before their first task.

The app host gets a new host key (as a spoofed or reinstalled server presents one): Ansible and
pyinfra must refuse to connect and change nothing. `lab/lab.sh keys` then records the new key
(read through docker exec, as `up` does), and the later stages connect again.
scripts/test-lab.sh runs this once, on the pyinfra pass (both tools, a few seconds each).
"""

from __future__ import annotations

import subprocess

import pytest

import grimbots_lab as lab

# What each tool says when the key on record does not match (OpenSSH; paramiko under pyinfra).
REFUSED = {
    "ansible": ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed"),
    "pyinfra": ("BadHostKeyException", "does not match", "Host key for server"),
}


@pytest.fixture
def new_host_key(app_vars):
    container = f"grimbots-lab-{app_vars['inventory_hostname']}"
    subprocess.run(
        ["docker", "exec", container, "sh", "-c",
         "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A -q && systemctl restart ssh"],
        check=True, timeout=60,
    )  # fmt: skip
    try:
        yield
    finally:
        subprocess.run(
            ["bash", "lab/lab.sh", "keys"], cwd=lab.ROOT, check=True, timeout=180,
            capture_output=True,
        )  # fmt: skip


@pytest.mark.parametrize("tool", ["ansible", "pyinfra"])
def test_a_changed_host_key_stops_the_deploy_before_its_first_task(
    tool, new_host_key, app_vars, monkeypatch, tmp_path
):
    # A fresh SSH control directory: a master connection an earlier run left open (ControlPersist)
    # was authenticated against the old key and would skip the check.
    monkeypatch.setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", str(tmp_path))
    run = lab.deploy(tool, 1, limit=app_vars["inventory_hostname"], timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert any(sign in out for sign in REFUSED[tool]), out[-3000:]
    if tool == "ansible":
        host = app_vars["inventory_hostname"]
        lines = out.splitlines()
        recap = next(line for line in lines if line.startswith(f"{host} ") and "ok=" in line)
        # ok= counts the preflight checks, which run on the control machine.
        assert "changed=0" in recap and "unreachable=1" in recap, recap
    else:
        assert "No hosts remaining" in out, out[-3000:]
        assert "Beginning operation run" not in out, out[-3000:]
