"""A role's template rendered by Ansible's own Templar, as ``ansible.builtin.template`` does.

Same engine, same settings (trim_blocks, no lstrip_blocks, "\\n" newlines, trailing newline
kept), same search path for ``{% include %}`` (the role's templates directory), so the file
pyinfra writes is byte for byte the one Ansible writes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from grimbots_infra.inventory import ROLES_DIR, HostVars


def template_path(role: str, src: str) -> Path:
    """roles/<role>/templates/<src>."""
    path = ROLES_DIR / role / "templates" / src
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def render(role: str, src: str, variables: HostVars) -> str:
    """The text Ansible's template module would write for roles/<role>/templates/<src>."""
    from ansible.template import trust_as_template

    path = template_path(role, src)
    role_dir = ROLES_DIR / role
    searchpath = [str(role_dir / "templates"), str(role_dir), str(path.parent)]
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
