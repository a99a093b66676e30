"""Shared by the Ansible roles and the pyinfra deploys, so neither re-describes the other.

- ``inventory``: inventory and vault read by ansible-core's own managers, with role defaults.
- ``render``: the roles' templates rendered by Ansible's own Templar.
- ``derive``: values computed from inventory knobs (Patroni timings, URLs, pool bounds).
- ``preflight``: the checks both tools run before touching a host.
- ``manifest`` / ``pyinfra_apply``: a role's declared files, units and packages, applied by pyinfra.
"""
