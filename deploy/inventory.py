"""pyinfra inventory adapter: the Ansible YAML inventory (vault included) as pyinfra hosts.

    pyinfra deploy/inventory.py deploy/phase1.py          # lab (inventory/lab)
    GRIMBOTS_INVENTORY=inventory/production GRIMBOTS_VAULT_PASSWORD_FILE=~/.vault-pass \
        pyinfra deploy/inventory.py deploy/phase1.py

Each host's data holds the connection settings and, under ``ansible_vars``, every variable an
Ansible run would see (role defaults + inventory + vault), so both tools render the same files.
"""

import os as _os
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))

import ansible_vars as _av  # noqa: E402

_ROOT = _Path(__file__).resolve().parent.parent
_INVENTORY = _Path(_os.environ.get("GRIMBOTS_INVENTORY", "inventory/lab"))
if not _INVENTORY.is_absolute():
    _INVENTORY = _ROOT / _INVENTORY
_ROLES = ["common", "app"]


def _connection(v: dict) -> dict:
    data = {
        "ssh_hostname": v.get("ansible_host", v["inventory_hostname"]),
        "ssh_user": v.get("ansible_user", "root"),
        "ssh_port": int(v.get("ansible_port", 22)),
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "off",
        "ansible_vars": v,
    }
    key = v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file")
    if key:
        data["ssh_key"] = str(key if _Path(key).is_absolute() else _ROOT / key)
    if v.get("ansible_become") and data["ssh_user"] != "root":
        data["_sudo"] = True
    return data


_inv = _av.load(_INVENTORY, _ROLES)
for _group, _members in _inv.groups.items():
    if _group in ("all", "ungrouped") or not _members:
        continue
    globals()[_group] = [(_h, _connection(_inv.hosts[_h])) for _h in _members]
