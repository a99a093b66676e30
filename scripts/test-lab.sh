#!/usr/bin/env bash
# The lab, every phase, from empty hosts, with one deploy tool; then the other tool must agree.
#   scripts/test-lab.sh ansible   Ansible builds phases 1 to 4; suites; reruns of both tools
#   scripts/test-lab.sh pyinfra   pyinfra builds phases 1 to 4; suites; reruns; the fault tests
#                                 (failover, phase 3 under load, alert delivery, dashboards)
# The hosts are recreated first (phase 1 must start from empty hosts on SQLite), the lab image is
# reused. A rerun of pyinfra proves its idempotence, a run of the other tool proves parity (and,
# on the pyinfra pass, Ansible's idempotence): all must report no change. Every stage is timed
# (scripts/lib.sh); TOOL prefixes its name.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
source scripts/lib.sh
tool=${1:-}
case $tool in
  ansible) other=pyinfra ;;
  pyinfra) other=ansible ;;
  *) echo "usage: scripts/test-lab.sh ansible|pyinfra" >&2; exit 2 ;;
esac
PYTEST=(pytest -p no:cacheprovider -p no:randomly)

deploy() { # PHASE: the command grimbots_lab gives for this tool and phase, output shown
  local cmd
  mapfile -t cmd < <(python -c 'import sys; from grimbots_lab import deploy_command
print("\n".join(deploy_command(sys.argv[1], int(sys.argv[2]))))' "$tool" "$1")
  "${cmd[@]}"
}

# The wheel set first: the app's preflight checks (in infra/tests too) look for it.
stage wheels bash scripts/build-wheels.sh
# The shared package's own tests (inventory, templates, preflight, derived values), once.
# The inventories' tests ran in the lint stage (scripts/lint.sh, inventory-tests).
if [[ $tool == ansible ]]; then
  stage infra-tests "${PYTEST[@]}" -q infra/tests \
    --ignore=infra/tests/test_production_inventory.py --ignore=infra/tests/test_ansible_api.py
fi
stage "$tool-fresh-hosts" bash -c 'bash lab/lab.sh down && bash lab/lab.sh up'
stage "$tool-smoke" bash lab/smoke.sh
# The inventory's platform_phase follows GRIMBOTS_LAB_PHASE (1 when unset; 4 from phase 4 on): each phase is built
# and tested at its own phase, as an operator raises platform_phase before the next playbook.
export GRIMBOTS_LAB_PHASE=1
stage "$tool-phase1" deploy 1
stage "$tool-phase1-suite" "${PYTEST[@]}" -v -s tests/phase1 --ignore tests/phase1/test_phase1_rerun.py \
  --ignore tests/phase1/test_restart_not_lost.py --ignore tests/phase1/test_host_keys.py \
  --ignore tests/phase1/test_renewal.py
# A forced certificate renewal on the front door under 20 updates/s (once, on the Ansible pass).
[[ $tool != ansible ]] || stage phase1-renewal "${PYTEST[@]}" -v -s tests/phase1/test_renewal.py
# The probe matrix (tests/firewall, docs/network.md): once, on the Ansible pass, after phases 1 and 4.
[[ $tool != ansible ]] || stage probe-matrix-phase1 "${PYTEST[@]}" -v -s tests/firewall
# A run failed between a change and its restart: the next run of this tool restarts.
stage "$tool-restart-not-lost" "${PYTEST[@]}" -v tests/phase1/test_restart_not_lost.py -k "$tool"
# A changed host key stops both tools (once, on the pyinfra pass).
[[ $tool != pyinfra ]] || stage host-keys "${PYTEST[@]}" -v tests/phase1/test_host_keys.py
stage "$tool-phase2-snapshot" python tests/phase2/phase1_snapshot.py
export GRIMBOTS_LAB_PHASE=2
stage "$tool-phase2" deploy 2
stage "$tool-phase2-suite" "${PYTEST[@]}" -v tests/phase2 \
  --ignore tests/phase2/test_failover.py --ignore tests/phase2/test_phase2_rerun.py
export GRIMBOTS_LAB_PHASE=3
# Through the switch probe: Telegram keeps calling app1 while its Redis moves (nothing lost).
stage "$tool-phase3" python tests/phase3/switch_probe.py "$tool"
# tests/phase2/test_phase1_rows.py again: every row of phases 1-2 is still there after the move.
stage "$tool-phase3-suite" "${PYTEST[@]}" -v -s tests/phase3 tests/phase2/test_phase1_rows.py \
  --ignore tests/phase3/test_soak.py --ignore tests/phase3/test_phase3_rerun.py \
  --ignore tests/phase3/test_rolling_update.py
export GRIMBOTS_LAB_PHASE=4
stage "$tool-phase4" deploy 4
stage "$tool-phase4-suite" "${PYTEST[@]}" -v -s tests/phase4 --ignore tests/phase4/test_dashboards.py \
  --ignore tests/phase4/test_alert_delivery.py --ignore tests/phase4/test_phase4_rerun.py \
  --ignore tests/phase4/test_backup_watch.py
[[ $tool != ansible ]] || stage probe-matrix-phase4 "${PYTEST[@]}" -v -s tests/firewall
# Idempotence (the same tool again), then parity (the other tool), each phase: no change.
RERUNS=(tests/phase1/test_phase1_rerun.py tests/phase2/test_phase2_rerun.py
  tests/phase3/test_phase3_rerun.py tests/phase4/test_phase4_rerun.py)
# playbooks/phase1.yml is imported by phase2.yml and phase3.yml, whose reruns (and --check) run
# it again on every app host: its own Ansible rerun would repeat that (about 3 min of 2 cores).
# pyinfra's phase-1 deploy, included the same way, is cheap and rerun on its own too.
rerun_filter() { if [[ $1 == ansible ]]; then echo "ansible and not phase1"; else echo "$1"; fi; }
# The same tool again: pyinfra only. Ansible's real no-op run is the parity stage of the pyinfra
# pass, on hosts pyinfra built: pyinfra changing nothing on Ansible's hosts and Ansible changing
# nothing on pyinfra's means both tools' runs end in one state that neither changes. Ansible's
# --check of each phase (about 120 s here) left CI for its budget; it runs on demand:
#   pytest -v tests/phase*/test_phase*_rerun.py -k "ansible-check and not phase1"
# --durations=0: each phase's no-op run time per tool, printed (docs/ci.md).
[[ $tool != pyinfra ]] || stage "$tool-rerun-$tool" "${PYTEST[@]}" -v --durations=0 "${RERUNS[@]}" -k pyinfra
# The other tool (parity); Ansible's --check is not part of it.
stage "$tool-rerun-$other" "${PYTEST[@]}" -v --durations=0 "${RERUNS[@]}" -k "$(rerun_filter "$other") and not check"
# The fault tests do not depend on the tool: once, on the pyinfra-built lab (at phase 4).
if [[ $tool == pyinfra ]]; then
  stage phase2-failover "${PYTEST[@]}" -v -s tests/phase2/test_failover.py
  # `make soak`'s 3-minute version: a fault every 20 s, each kind at least once (docs/operations.md).
  stage soak env SOAK_MINUTES=3 SOAK_INTERVAL=20 GRIMBOTS_CHAOS_RATE=20 \
    "${PYTEST[@]}" -v -s tests/phase3/test_soak.py
  stage phase4-alert-delivery "${PYTEST[@]}" -v -s tests/phase4/test_alert_delivery.py
  # The backup metrics in Prometheus; WalArchivingFailing fired and resolved at the fake Telegram.
  stage phase4-backup-watch "${PYTEST[@]}" -v -s tests/phase4/test_backup_watch.py
  stage phase4-dashboards "${PYTEST[@]}" -v -s tests/phase4/test_dashboards.py
fi
# The rolling app update under 20 /start updates/s (tests/phase3/test_rolling_update.py, about
# 280-380 s) left CI for its budget (docs/ci.md); on a phase-3 or 4 lab, on demand:
#   GRIMBOTS_LAB_PHASE=4 GRIMBOTS_ROLLING_TOOLS=pyinfra,ansible pytest -v -s tests/phase3/test_rolling_update.py
