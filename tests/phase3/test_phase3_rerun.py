"""Phase 3 rerun: on a lab built by either tool, a run of either tool changes nothing.

scripts/test-lab.sh builds the lab with one tool, then runs the same tool again (idempotence)
and the other one (parity), and Ansible in --check mode: both tools read the same inventory,
vault, role defaults and templates through ansible-core, so any change reported here is a real
drift between the two.
"""

import pytest

from grimbots_infra import lab


@pytest.mark.parametrize("tool", ["ansible", "ansible-check", "pyinfra"])
def test_a_rerun_of_phase3_changes_nothing(tool):
    run = lab.deploy(tool, 3)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    changed = lab.changes(tool, out)
    assert not changed, "\n".join(changed) + "\n" + out[-3000:]
