#!/usr/bin/python
# One module call for every directory and file of a role's manifest stage (the action plugin of
# the same name renders the templates and reads the files on the controller): a role with ten
# templates costs one round trip per host instead of ten template/copy calls.

import hashlib
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: grimbots_files
short_description: Directories and whole files of one manifest stage, in one call
description:
  - Creates each directory, then writes each file whose content, owner, group or mode differs,
    in the given order. A file with C(validate) is staged beside its destination, checked by the
    validator (C(%s) is the staged file), and moved into place only when it passes. A file with
    C(force=false) is written only when absent and otherwise left as it is.
  - Used through the grimbots_files action plugin (roles/platform/action_plugins), which renders
    the contents; secret contents travel in C(secrets), which Ansible never logs.
options:
  directories:
    description: "[{path, owner, group, mode}]"
    type: list
    elements: dict
    default: []
  files:
    description: >-
      "[{dest, owner, group, mode, content or secret (an index into secrets), validate, force}]"
    type: list
    elements: dict
    default: []
  secrets:
    description: The contents of the secret files.
    type: list
    elements: str
    default: []
    no_log: true
"""


def _sha1(data):
    return hashlib.sha1(data).hexdigest()  # noqa: S324 - a change marker, as Ansible's checksum


def _file_sha1(path):
    with open(path, "rb") as handle:
        return _sha1(handle.read())


class StageFailed(Exception):
    """A file that could not land (its validator refused it): the run stops there."""


def _attrs(module, path, spec, changed):
    args = module.load_file_common_arguments(
        {"path": path, "owner": spec["owner"], "group": spec["group"], "mode": spec["mode"]}
    )
    return module.set_fs_attributes_if_different(args, changed)


def _make_dirs(module, path, spec):
    """path and its missing parents, each with the directory's owner, group and mode (as
    ansible.builtin.file gives the parents it creates)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for new in reversed(missing):
        os.mkdir(new)
        _attrs(module, new, spec, True)


def _stage_and_move(module, spec, data):
    """Write data beside dest, give it its owner and mode, validate, then move it into place."""
    dest = spec["dest"]
    fd, staged = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=f".{os.path.basename(dest)}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        _attrs(module, staged, spec, True)
        if spec.get("validate"):
            if "%s" not in spec["validate"]:
                raise StageFailed(f"validate for {dest} must contain %s: {spec['validate']}")
            rc, out, err = module.run_command(spec["validate"] % staged)
            if rc != 0:
                raise StageFailed(f"{dest} failed validation ({spec['validate']}): {out}{err}")
        module.atomic_move(staged, dest, unsafe_writes=False)
        # atomic_move gives the new file the old one's owner and mode: set the wanted ones.
        _attrs(module, dest, spec, True)
    finally:
        if os.path.lexists(staged):
            os.unlink(staged)


def main():
    module = AnsibleModule(
        argument_spec={
            "directories": {"type": "list", "elements": "dict", "default": []},
            "files": {"type": "list", "elements": "dict", "default": []},
            "secrets": {"type": "list", "elements": "str", "default": [], "no_log": True},
        },
        supports_check_mode=True,
    )
    changed_dirs, changed_files = [], []
    try:
        _apply(module, changed_dirs, changed_files)
    except (StageFailed, OSError) as exc:
        # What changed before the failure is reported, so its on_change actions are recorded.
        module.fail_json(
            msg=str(exc), changed_directories=changed_dirs, changed_files=changed_files
        )
    module.exit_json(
        changed=bool(changed_dirs or changed_files),
        changed_directories=changed_dirs,
        changed_files=changed_files,
    )


def _apply(module, changed_dirs, changed_files):
    for spec in module.params["directories"]:
        path = spec["path"]
        created = not os.path.isdir(path)
        if created and not module.check_mode:
            _make_dirs(module, path, spec)
        if (created and module.check_mode) or _attrs(module, path, spec, created):
            changed_dirs.append(path)
    for spec in module.params["files"]:
        dest = spec["dest"]
        exists = os.path.lexists(dest)
        if exists and not spec.get("force", True):
            continue
        if "secret" in spec:
            data = module.params["secrets"][int(spec["secret"])].encode()
        else:
            data = spec["content"].encode()
        if not exists or _file_sha1(dest) != _sha1(data):
            if not module.check_mode:
                _stage_and_move(module, spec, data)
            changed_files.append(dest)
        elif _attrs(module, dest, spec, False):
            changed_files.append(dest)


if __name__ == "__main__":
    main()
