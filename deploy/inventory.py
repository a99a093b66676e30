"""pyinfra inventory: the Ansible YAML inventory (vault included), read by ansible-core.

    pyinfra -y deploy/inventory.py deploy/phase1.py                       # lab (inventory/lab)
    GRIMBOTS_INVENTORY=inventory/production GRIMBOTS_VAULT_PASSWORD_FILE=~/.vault-pass \\
        pyinfra -y deploy/inventory.py deploy/phase1.py

One pyinfra group per Ansible group, with each host's connection settings from its Ansible
variables (ansible_host, ansible_user, ansible_port, the private key). The deploys read every
other variable through grimbots_infra.inventory, as a task of the phase's play would see it.
"""

from pathlib import Path as _Path

from grimbots_infra.inventory import ROOT as _ROOT
from grimbots_infra.inventory import load as _load
from grimbots_infra.phases import ALL_ROLES as _ROLES


def _known_hosts(variables) -> str:
    path = variables.get("grimbots_known_hosts_file")
    if not path:
        raise SystemExit(
            f"{variables['inventory_hostname']}: the inventory sets no grimbots_known_hosts_file "
            "(the known_hosts file its host keys are checked against)"
        )
    return str(path if _Path(path).is_absolute() else _ROOT / path)


def _connection(variables) -> dict:
    data = {
        # Plain str: ansible-core tags its values (str subclasses); keep them out of pyinfra.
        "ssh_hostname": str(variables.get("ansible_host", variables["inventory_hostname"])),
        "ssh_user": str(variables.get("ansible_user", "root")),
        "ssh_port": int(variables.get("ansible_port", 22)),
        # Host keys checked against the inventory's file only, as Ansible does (hosts.yml).
        "ssh_known_hosts_file": _known_hosts(variables),
        "ssh_strict_host_key_checking": "yes",
    }
    key = variables.get("ansible_ssh_private_key_file") or variables.get("ansible_private_key_file")
    if key:
        data["ssh_key"] = str(key if _Path(key).is_absolute() else _ROOT / key)
    if variables.get("ansible_become") and data["ssh_user"] != "root":
        data["_sudo"] = True
    return data


_inv = _load(_ROLES)
for _group, _members in _inv.groups.items():
    if _group in ("all", "ungrouped") or not _members:
        continue
    globals()[_group] = [(_h, _connection(_inv.vars(_h))) for _h in _members]
