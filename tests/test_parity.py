"""Parity: pyinfra and Ansible converge the lab to the same hosts.

Run after an Ansible deploy of phase 1 (scripts/test-lab.sh does): a pyinfra run then changes
nothing, and an Ansible run after it reports changed=0. Both read the same inventory, vault,
role defaults and templates (deploy/ansible_vars.py), so any drift is a real defect.
"""

import re
import subprocess

from conftest import ROOT, ansible_playbook


def _pyinfra(deploy: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "pyinfra"),
            "-y",
            "--limit",
            "app",
            "deploy/inventory.py",
            deploy,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _changed_operations(output: str) -> list[str]:
    """Rows of pyinfra's results table whose Success (= changed) column is not '-'."""
    rows = []
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 5 and cells[0] not in ("Operation",) and cells[2] not in ("-", "Success"):
            rows.append(line.strip())
    return rows


def test_pyinfra_after_ansible_changes_nothing():
    run = _pyinfra("deploy/phase1.py")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "Grand total" in out, out[-2000:]
    changed = _changed_operations(out)
    assert not changed, "\n".join(changed)


def test_ansible_after_pyinfra_reports_no_change():
    run = ansible_playbook("phase1.yml")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", run.stdout, re.M)
    assert recap and all(int(n) == 0 for _, n in recap), run.stdout[-5000:]
