#!/usr/bin/env bash
# Lint everything CI lints: ruff (whole repo, ruff.toml), yamllint, ansible-lint (production
# profile), role defaults vs argument_specs vs README, the inventories' tests (inventory/production
# with the example vault, the loader), the alert rules (promtool check and unit tests,
# scripts/check_alert_rules.py), and the lab's package check if present.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
source scripts/lib.sh
rc=0
stage ruff ruff check . || rc=1
# Formatting is checked on Python sources only (ruff would also reformat code blocks in Markdown).
stage ruff-format ruff format --check $(git ls-files '*.py') || rc=1
stage yamllint yamllint -s . || rc=1
stage ansible-lint ansible-lint -q roles playbooks molecule || rc=1
stage argument-specs python3 scripts/check_argument_specs.py || rc=1
# The inventories before any lab: inventory/production with the test-only example vault through
# every phase's preflight and every template, its placeholders refused; the lab's preflight;
# the loader against ansible-inventory. No wheels, no hosts: about 25 s of CPU.
stage inventory-tests pytest -p no:cacheprovider -q \
  infra/tests/test_production_inventory.py infra/tests/test_ansible_api.py || rc=1
# A role is one folder: the files outside roles/<role>/ adding a role takes, printed (at most 2).
stage role-files pytest -p no:cacheprovider -q -s infra/tests/test_role_is_one_folder.py || rc=1
# Alert rules: syntax, a firing and a silent case per rule, severities and runbook anchors.
if command -v promtool >/dev/null; then
  stage promtool-check bash -c 'cd roles/monitoring/files && promtool check rules alert_rules.yml' || rc=1
  stage promtool-test bash -c 'cd roles/monitoring/files && promtool test rules alert_rules_test.yml' || rc=1
else
  echo "promtool missing: run make services (Debian's prometheus package)"; rc=1
fi
stage alert-rules python3 scripts/check_alert_rules.py || rc=1
# Dashboards are generated from code; the committed JSON must match it, and every rule and
# dashboard expression must evaluate on a real (throwaway, loopback) Prometheus.
stage dashboards python3 scripts/build_dashboards.py --check || rc=1
stage promql python3 scripts/check_promql.py || rc=1
if [[ -f lab/check_packages.py ]]; then
  stage lab-packages python3 lab/check_packages.py || rc=1
fi
exit $rc
