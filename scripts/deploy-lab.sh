#!/usr/bin/env bash
# Deploy every implemented phase on the running lab with Ansible (used by `make lab`).
# The lab's vault password is committed on purpose (throwaway secrets; see docs/phase1.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
source scripts/lib.sh
stage wheels bash scripts/build-wheels.sh
stage deploy-site ansible-playbook -i inventory/lab \
  --vault-password-file inventory/lab/vault-password.txt playbooks/site.yml
