"""The firewall's rules from one table of who talks to whom (roles/firewall/defaults/main.yml,
``firewall_flows``): each flow names a source (an inventory group of platform_groups, ``any``
for the internet, ``admin`` for the control machine), destination groups, port names of
platform_ports and the phases it holds in. The firewall role's template, the preflight check,
docs/network.md's test and the lab's probe matrix all read the table through this module.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from grimbots_infra import derive, guards

if TYPE_CHECKING:  # preflight imports this module
    from grimbots_infra.preflight import Inputs

ANY, ADMIN, ALL = "any", "admin", "all"
# A destination that is no group: the hosts terminating TLS (platform_front_door: the first app
# host in phases 1-2 unless platform_front_door_on_app is false, the lb hosts from phase 3).
FRONT_DOOR = "front_door"
# Ranges reserved for documentation (RFC 5737, RFC 3849): an example inventory's admin source
# left in place would lock the operator's real address out of SSH on every host.
DOCUMENTATION = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def ports(platform_ports: Mapping[str, Any], ssh_port: int | str) -> dict[str, list[int]]:
    """Every port name a flow may use, as lists: platform_ports and ``ssh``."""
    out = {
        k: [int(p) for p in (v if isinstance(v, list) else [v])] for k, v in platform_ports.items()
    }
    out["ssh"] = [int(ssh_port)]
    return out


def _listify(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def active(flow: Mapping[str, Any], phase: int | str) -> bool:
    """A flow holds in ``phase`` unless its ``phases`` list leaves it out."""
    return int(phase) in [int(p) for p in flow.get("phases", [1, 2, 3, 4])]


def rules(
    flows: Iterable[Mapping[str, Any]],
    host: str,
    host_groups: Iterable[str],
    variables: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The accept rules of ``host`` (in the groups ``host_groups``): one per active flow whose
    destination is one of its groups, with the sources' addresses (private, derive.address;
    empty list: any source) and the ports. ``variables``: platform_groups, groups, hostvars,
    platform_phase, platform_front_door, firewall_ports, firewall_admin_sources,
    firewall_admin_all_ports."""
    names = variables["platform_groups"]
    mine = {kind for kind, group in names.items() if group in set(host_groups)}
    if host in variables["platform_front_door"]:
        mine.add(FRONT_DOOR)
    out = []
    for flow in flows:
        targets = set(_listify(flow["to"]))
        if not active(flow, variables["platform_phase"]) or not (ALL in targets or mine & targets):
            continue
        if mine & set(_listify(flow.get("not_to", []))):  # e.g. not where the front door runs
            continue
        if flow["from"] == ANY:
            sources: list[str] = []
        elif flow["from"] == ADMIN:
            sources = [str(s) for s in variables["firewall_admin_sources"]]
        else:
            members = variables["groups"].get(names[flow["from"]], [])
            sources = sorted(
                set(derive.addresses(members, variables["hostvars"], "platform_private_address"))
            )
        numbers = sorted({p for name in flow["ports"] for p in variables["firewall_ports"][name]})
        out.append(
            {
                "comment": f"{flow['from']} -> {','.join(_listify(flow['to']))}: {flow['purpose']}",
                "ip": [s for s in sources if ":" not in s],
                "ip6": [s for s in sources if ":" in s],
                "any": not sources,
                "ports": numbers,
            }
        )
    if variables.get("firewall_admin_all_ports"):
        admin = [str(s) for s in variables["firewall_admin_sources"]]
        out.append(
            {
                "comment": "admin -> all: every port (firewall_admin_all_ports: the lab's tests)",
                "ip": [s for s in admin if ":" not in s],
                "ip6": [s for s in admin if ":" in s],
                "any": False,
                "ports": [],
            }
        )
    return [r for r in out if r["any"] or r["ip"] or r["ip6"]]


def markdown_table(flows: Iterable[Mapping[str, Any]]) -> str:
    """docs/network.md's table (its test compares it with this)."""
    lines = ["| from | to | ports | phases | purpose |", "|---|---|---|---|---|"]
    for flow in flows:
        phases = ", ".join(str(p) for p in flow.get("phases", [1, 2, 3, 4]))
        to = ", ".join(_listify(flow["to"]))
        if flow.get("not_to"):
            to += f" (not {', '.join(_listify(flow['not_to']))})"
        lines.append(
            f"| {flow['from']} | {to} | {', '.join(flow['ports'])} | {phases} | {flow['purpose']} |"
        )
    return "\n".join(lines)


def check(inputs: Inputs) -> list[str]:
    """Preflight of the firewall role: admin sources that parse (an empty list locks the
    operator out), flows that name known groups and ports, a private address for every member
    of a source group."""
    out = []
    admin = inputs.get("firewall_admin_sources") or []
    if not admin:
        out.append(
            inputs.problem(
                "firewall_admin_sources",
                "is empty: the firewall would let no control machine reach SSH; list the "
                "control machine's address(es)",
            )
        )
    for source in admin:
        try:
            network = ipaddress.ip_network(str(source), strict=False)
        except ValueError:
            out.append(
                inputs.problem(
                    "firewall_admin_sources",
                    f"{source!r} is not an IP/CIDR (a host name is not resolved: the rule "
                    "would follow whatever DNS says at deploy time)",
                )
            )
            continue
        if any(network.version == d.version and network.overlaps(d) for d in DOCUMENTATION):
            out.append(
                inputs.problem(
                    "firewall_admin_sources",
                    f"{source} is a documentation address (the example inventory's): put your "
                    "control machine's address or range, or the firewall locks you out of SSH",
                )
            )
    kinds = set(inputs.get("platform_groups", {})) | {ANY, ADMIN, ALL}
    known_ports = set(inputs.get("firewall_ports", {}))
    groups = inputs.get("groups", {})
    for flow in inputs.get("firewall_flows", []):
        names = [
            (flow.get("from"), kinds),
            *((t, kinds | {FRONT_DOOR}) for t in _listify(flow.get("to", []))),
            *((t, kinds | {FRONT_DOOR}) for t in _listify(flow.get("not_to", []))),
        ]
        for name, known in names:
            if name not in known:
                out.append(
                    inputs.problem("firewall_flows", f"group {name!r} is not in platform_groups")
                )
        for port in flow.get("ports", []):
            if port not in known_ports:
                out.append(
                    inputs.problem("firewall_flows", f"port {port!r} is not in firewall_ports")
                )
        if flow.get("from") in inputs.get("platform_groups", {}):
            members = groups.get(inputs["platform_groups"][flow["from"]], [])
            out += guards.members_private(
                inputs,
                f"the firewall's sources ({flow['from']})",
                members,
                "platform_private_address",
            )
    return out
