"""Phase 1 idempotence: a second playbook run on the deployed lab changes nothing."""

import re

from conftest import ansible_playbook


def test_second_playbook_run_reports_no_change():
    run = ansible_playbook("phase1.yml")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", run.stdout, re.M)
    assert recap, run.stdout[-2000:]
    changed = {host: int(n) for host, n in recap if int(n)}
    assert not changed, run.stdout[-5000:]
