"""A role's template rendered by Ansible's own Templar, as ``ansible.builtin.template`` does.

Same engine, same settings (trim_blocks, no lstrip_blocks, "\\n" newlines, trailing newline
kept), same search path for ``{% include %}`` (the role's templates directory), so the file
pyinfra writes is byte for byte the one Ansible writes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from grimbots_infra.inventory import HostVars, role_dir


def template_path(role: str, src: str) -> Path:
    """<role folder>/templates/<src> (roles/<role> unless ANSIBLE_ROLES_PATH has it first)."""
    path = role_dir(role) / "templates" / src
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def render(role: str, src: str, variables: HostVars) -> str:
    """The text Ansible's template module would write for roles/<role>/templates/<src>."""
    from ansible.template import trust_as_template

    path = template_path(role, src)
    folder = role_dir(role)
    searchpath = [str(folder / "templates"), str(folder), str(path.parent)]
    templar = variables.templar.copy_with_new_env(searchpath=searchpath)
    out = templar.template(
        trust_as_template(path.read_text()),
        escape_backslashes=False,
        overrides={"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"},
    )
    return "" if out is None else str(out)


def sha1(text: str) -> str:
    """Ansible's ``hash('sha1')`` filter (a change marker, not security)."""
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324
