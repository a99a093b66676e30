#!/usr/bin/env bash
# The lab, phase 1: start the lab, deploy with Ansible, prove idempotence, run the testinfra
# suite, then prove parity with pyinfra both ways. Every stage is timed (scripts/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
source scripts/lib.sh
VAULT=(--vault-password-file inventory/lab/vault-password.txt)
LOGS=${LAB_LOG_DIR:-/tmp/grimbots-lab-logs}
mkdir -p "$LOGS"

# ansible-playbook that fails when the run changed anything (PLAY RECAP changed=N).
ansible_unchanged() {
  local log=$1; shift
  ansible-playbook -i inventory/lab "${VAULT[@]}" "$@" | tee "$log"
  if grep -E '^[a-z0-9]+ +: .*changed=[1-9]' "$log"; then
    echo "expected changed=0 (see $log)"; return 1
  fi
}

# pyinfra run that fails when an operation changed the host.
pyinfra_unchanged() {
  local log=$1; shift
  pyinfra -y --limit app deploy/inventory.py "$@" 2>&1 | tee "$log"
  python3 scripts/pyinfra_changes.py "$log"
}

stage lab-up bash lab/lab.sh up
stage wheels bash scripts/build-wheels.sh
stage phase1-ansible ansible-playbook -i inventory/lab "${VAULT[@]}" playbooks/phase1.yml
stage phase1-idempotence ansible_unchanged "$LOGS/phase1-second-run.log" playbooks/phase1.yml
stage phase1-testinfra pytest -p no:cacheprovider tests/phase1 -v -s
stage parity-pyinfra-after-ansible pyinfra_unchanged "$LOGS/pyinfra-after-ansible.log" deploy/phase1.py
stage parity-ansible-after-pyinfra ansible_unchanged "$LOGS/ansible-after-pyinfra.log" playbooks/phase1.yml
