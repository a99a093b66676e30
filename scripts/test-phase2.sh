#!/usr/bin/env bash
# The lab, phase 2 (after phase 1: scripts/test-lab.sh): snapshot rows the phase-1 app writes,
# deploy phase 2 with Ansible, prove idempotence, run tests/phase2 (cluster, app on PostgreSQL,
# phase-1 rows kept), the failover and switchover tests, then parity with pyinfra both ways.
# Every stage is timed (scripts/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
source scripts/lib.sh
VAULT=(--vault-password-file inventory/lab/vault-password.txt)
LOGS=${LAB_LOG_DIR:-/tmp/grimbots-lab-logs}
mkdir -p "$LOGS"
APP1=$(awk '/app1:/ {gsub(/[{},]/, ""); print $3; exit}' inventory/lab/hosts.yml)
SSH=(ssh -i lab/.state/id_ed25519 -o BatchMode=yes -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5)

# ansible-playbook that fails when the run changed anything (PLAY RECAP changed=N).
ansible_unchanged() {
  local log=$1; shift
  ansible-playbook -i inventory/lab "${VAULT[@]}" "$@" > "$log" 2>&1 || { tail -50 "$log"; return 1; }
  tail -12 "$log"
  if grep -E '^[a-z0-9]+ +: .*changed=[1-9]' "$log"; then
    echo "expected changed=0 (see $log)"; return 1
  fi
}

# Phase 1 must be there (scripts/test-lab.sh deploys it); deploy it only when it is not.
phase1_present() {
  "${SSH[@]}" "root@$APP1" test -f /etc/grimbots/grimbots.env && return 0
  bash scripts/build-wheels.sh
  ansible-playbook -i inventory/lab "${VAULT[@]}" playbooks/phase1.yml
}

stage lab-up bash lab/lab.sh up
stage phase1-present phase1_present
stage phase2-snapshot python tests/phase2/phase1_snapshot.py
stage phase2-ansible ansible-playbook -i inventory/lab "${VAULT[@]}" playbooks/phase2.yml
stage phase2-idempotence ansible_unchanged "$LOGS/phase2-second-run.log" playbooks/phase2.yml
stage phase2-testinfra pytest -p no:cacheprovider -v tests/phase2 \
  --ignore tests/phase2/test_failover.py --ignore tests/phase2/test_parity.py
stage phase2-failover pytest -p no:cacheprovider -v -s tests/phase2/test_failover.py
# In order: pyinfra after Ansible changes nothing, then Ansible after pyinfra changes nothing.
stage phase2-parity pytest -p no:cacheprovider -v -p no:randomly tests/phase2/test_parity.py
