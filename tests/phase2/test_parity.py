"""Phase-2 parity: pyinfra and Ansible converge the db and app hosts to the same state.

Run after an Ansible deploy of phase 2 (scripts/test-phase2.sh does), in this order: a pyinfra
run of deploy/phase2.py changes nothing, then an Ansible run of phase2.yml reports changed=0.
"""

import re
import subprocess

import lab2


def _changed_operations(output: str) -> list[str]:
    """Rows of pyinfra's results table whose Success (= changed) column is not '-'."""
    rows = []
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 5 and cells[0] != "Operation" and cells[2] not in ("-", "Success"):
            rows.append(line.strip())
    return rows


def test_pyinfra_after_ansible_changes_nothing():
    run = subprocess.run(
        [
            str(lab2.ROOT / ".venv" / "bin" / "pyinfra"),
            "-y",
            "--limit",
            "db",
            "--limit",
            "app",
            "deploy/inventory.py",
            "deploy/phase2.py",
        ],
        cwd=lab2.ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "Grand total" in out, out[-2000:]
    changed = _changed_operations(out)
    assert not changed, "\n".join(changed)


def test_ansible_after_pyinfra_reports_no_change():
    run = subprocess.run(
        [
            str(lab2.ROOT / ".venv" / "bin" / "ansible-playbook"),
            "-i",
            str(lab2.LAB_INVENTORY),
            "--vault-password-file",
            str(lab2.LAB_INVENTORY / "vault-password.txt"),
            str(lab2.ROOT / "playbooks" / "phase2.yml"),
        ],
        cwd=lab2.ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", run.stdout, re.M)
    changed = {host: int(n) for host, n in recap if int(n)}
    assert recap and not changed, run.stdout[-5000:]
