#!/usr/bin/env bash
# The lab, phase 1: start the lab, deploy with Ansible, prove idempotence, run the testinfra
# suite, then prove parity with pyinfra both ways. Every stage is timed (scripts/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
source scripts/lib.sh
VAULT=(--vault-password-file inventory/lab/vault-password.txt)

# Fresh hosts every time: phase 1 must start from an empty host on SQLite, whatever a previous
# run (or `make lab`, which deploys every phase) left behind.
stage lab-fresh bash lab/lab.sh down
stage lab-up bash lab/lab.sh up
stage lab-smoke bash lab/smoke.sh
stage wheels bash scripts/build-wheels.sh
stage phase1-ansible ansible-playbook -i inventory/lab "${VAULT[@]}" playbooks/phase1.yml
stage phase1-idempotence pytest -p no:cacheprovider -q tests/phase1/test_idempotence.py
stage phase1-testinfra pytest -p no:cacheprovider -v -s tests/phase1 \
  --ignore tests/phase1/test_idempotence.py
# In order: pyinfra after Ansible changes nothing, then Ansible after pyinfra changes nothing.
stage parity pytest -p no:cacheprovider -v -p no:randomly tests/test_parity.py
