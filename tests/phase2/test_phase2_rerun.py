"""Phase 2 rerun: on a lab built by either tool, a run of either tool changes nothing.

scripts/test-lab.sh builds the lab with one tool, then runs the same tool again (idempotence)
and the other one (parity), and Ansible in --check mode (grimbots_lab.
assert_rerun_changes_nothing says why any change is a real drift).
"""

import pytest

import grimbots_lab as lab


@pytest.mark.parametrize("tool", lab.RERUN_TOOLS)
def test_a_rerun_of_phase2_changes_nothing(tool):
    lab.assert_rerun_changes_nothing(tool, 2)
