"""Print the lab hosts of an Ansible YAML inventory, one per line: `name address groups`.

lab.sh reads the host list from the inventory so the lab and the deploy tools never disagree.
"""

import sys
from pathlib import Path

import yaml


def walk(group: str, node: dict | None, hosts: dict[str, dict]) -> None:
    """Collect every host under `group` (children included) with its address and groups."""
    node = node or {}
    for name, hostvars in (node.get("hosts") or {}).items():
        entry = hosts.setdefault(name, {"address": None, "groups": []})
        address = (hostvars or {}).get("ansible_host")
        entry["address"] = entry["address"] or address
        if group != "all" and group not in entry["groups"]:
            entry["groups"].append(group)
    for child, child_node in (node.get("children") or {}).items():
        walk(child, child_node, hosts)


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "inventory/lab/hosts.yml")
    inventory = yaml.safe_load(path.read_text()) or {}
    hosts: dict[str, dict] = {}
    walk("all", inventory.get("all"), hosts)
    missing = [name for name, entry in hosts.items() if not entry["address"]]
    if missing:
        print(f"{path}: no ansible_host for {', '.join(missing)}", file=sys.stderr)
        return 1
    for name, entry in hosts.items():
        print(name, entry["address"], ",".join(entry["groups"]) or "-")
    return 0


if __name__ == "__main__":
    sys.exit(main())
