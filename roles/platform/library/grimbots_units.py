#!/usr/bin/python
# Every unit of a manifest's `units` put in its state in one module call (one round trip per
# host, not one per unit), with ansible.builtin.systemd_service's meaning of enabled, started
# and stopped, in the given order.

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.parsing.convert_bool import boolean

DOCUMENTATION = r"""
module: grimbots_units
short_description: Units enabled or disabled, started or stopped, in one call
description:
  - For each unit in order, as ansible.builtin.systemd_service does it - enabled first (a unit
    counts as enabled when C(systemctl is-enabled) succeeds and does not say enabled-runtime,
    indirect or alias), then the state (started when not active or activating, stopped when
    active, activating or deactivating). C(no_block) starts or stops without waiting.
options:
  units:
    description: >-
      A manifest's units, "[{names, state (started|stopped), enabled (bool), no_block (bool),
      when (bool)}]"; an entry whose when is false is skipped.
    type: list
    elements: dict
    required: true
"""


NOT_ENABLED = ("enabled-runtime", "indirect", "alias")


def _show(module, systemctl, name):
    rc, out, err = module.run_command([systemctl, "show", name, "-p", "LoadState,ActiveState"])
    if rc != 0:
        module.fail_json(msg=f"systemctl show {name} failed: {err}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _is_enabled(module, systemctl, name):
    rc, out, _ = module.run_command([systemctl, "is-enabled", name, "-l"])
    return rc == 0 and out.strip() not in NOT_ENABLED


def _run(module, systemctl, verb, unit, no_block=False):
    argv = [systemctl, verb, unit] + (["--no-block"] if no_block else [])
    rc, out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg=f"Unable to {verb} {unit}: {out}{err}")


def main():
    module = AnsibleModule(
        argument_spec={"units": {"type": "list", "elements": "dict", "required": True}},
        supports_check_mode=True,
    )
    systemctl = module.get_bin_path("systemctl", required=True)
    changed = []
    for entry in module.params["units"]:
        if boolean(entry.get("when", True), strict=False):
            for name in entry["names"]:
                _put(module, systemctl, name, entry, changed)
    module.exit_json(changed=bool(changed), changes=changed)


def _put(module, systemctl, name, unit, changed):
    """One unit: enabled first, then its state (systemd_service's order)."""
    status = _show(module, systemctl, name)
    if status.get("LoadState") == "not-found":
        module.fail_json(msg=f"Could not find the requested service {name}: host")
    enabled = unit.get("enabled")
    if enabled is not None and _is_enabled(module, systemctl, name) != boolean(
        enabled, strict=False
    ):
        enabled = boolean(enabled, strict=False)
        changed.append(f"{name}: {'enabled' if enabled else 'disabled'}")
        if not module.check_mode:
            _run(module, systemctl, "enable" if enabled else "disable", name)
    state = unit.get("state")
    active = status.get("ActiveState")
    verb = None
    if state == "started" and active not in ("active", "activating"):
        verb = "start"
    elif state == "stopped" and active in ("active", "activating", "deactivating"):
        verb = "stop"
    elif state not in (None, "started", "stopped"):
        module.fail_json(msg=f"{name}: state must be started or stopped, not {state}")
    if verb:
        changed.append(f"{name}: {verb}")
        if not module.check_mode:
            no_block = boolean(unit.get("no_block", False), strict=False)
            _run(module, systemctl, verb, name, no_block)


if __name__ == "__main__":
    main()
