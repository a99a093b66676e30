#!/usr/bin/env bash
# Deploy every phase on the running lab with Ansible (used by `make lab`), one after the other as
# an operator does: platform_phase raised to N (GRIMBOTS_LAB_PHASE), then phase N's playbook.
# Ends at GRIMBOTS_LAB_PHASE=4: export it in a shell that reruns or tests the finished lab.
# The lab's vault password is committed on purpose (throwaway secrets; see docs/phase1.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
source scripts/lib.sh
stage wheels bash scripts/build-wheels.sh
for phase in 1 2 3 4; do
  export GRIMBOTS_LAB_PHASE=$phase
  stage "deploy-phase$phase" ansible-playbook -i inventory/lab \
    --vault-password-file inventory/lab/vault-password.txt "playbooks/phase$phase.yml"
done
