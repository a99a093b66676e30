"""The conformance fixtures with pyinfra, as deploy/phaseN.py applies a role (site.yml is the
same with Ansible). Variables are the inventory host ``conformance``'s, read by ansible-core:

    ANSIBLE_ROLES_PATH=tests/conformance/roles:roles \\
        pyinfra -y @docker/<container> tests/conformance/deploy.py [--data grimbots_extra_vars=JSON]
"""

from __future__ import annotations

from pathlib import Path

from grimbots_infra import apply
from grimbots_infra.inventory import load
from grimbots_infra.pyinfra_ops import extra_vars

ROLES = ("conf_install", "conf_units", "conf_templates")
INVENTORY = Path(__file__).resolve().parent / "inventory"

variables = load(ROLES, str(INVENTORY)).vars("conformance", extra_vars() or None)
for role in ROLES:
    changed_files = apply.install(role, variables)
    apply.service(role, variables, apply.configure(role, variables), changed_files)
