"""The platform's install stage on this machine, in --check mode (nothing changes): the apt task
runs only for a package list dpkg does not fully have or whose apt lists are older than its
cache_valid_time, what apt would act on; a no-op rerun makes no apt call (each loads the whole
apt cache, 1-3 s a role and host)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from grimbots_infra.inventory import ROOT

PYTHON = "/usr/bin/python3"  # Debian's, with python3-apt (what the apt module needs)
MISSING = "grimbots-no-such-package"


def test_the_apt_task_runs_only_for_missing_packages_or_stale_lists(tmp_path: Path):
    manifest = {
        "packages": [
            {"names": ["bash", "coreutils"], "update_cache": False},
            {"names": ["bash"], "update_cache": True, "cache_valid_time": 1},
            {"names": ["bash"], "update_cache": True, "cache_valid_time": 10**9},
            {"names": ["bash", MISSING], "update_cache": False},
        ]
    }
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"platform_role": "probe", "platform_manifest": manifest},
            "tasks": [
                {
                    "ansible.builtin.import_role": {"name": "platform", "tasks_from": "install"},
                    "ignore_errors": True,  # apt refuses the missing package, even in --check
                }
            ],
        }
    ]
    playbook = tmp_path / "install.yml"
    playbook.write_text(yaml.safe_dump(play))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }
    run = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "--check", "-i", "localhost,",
         "-e", f"ansible_python_interpreter={PYTHON}", str(playbook)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    out = json.loads(run.stdout[run.stdout.index("{") :])
    apt = [
        t["hosts"]["localhost"]
        for p in out["plays"]
        for t in p["tasks"]
        if t["task"]["name"].endswith("Install the Debian packages of probe")
    ]
    assert len(apt) == 1, run.stdout[-3000:]
    ran = [not r.get("skipped", False) for r in apt[0]["results"]]
    assert ran == [False, True, False, True], apt[0]["results"]
