"""pyinfra's side of one set of templates: a role template, rendered with Ansible's variables."""

from __future__ import annotations

import io

from ansible_vars import render
from pyinfra.operations import files


def put_template(template: str, dest: str, v: dict, user: str, group: str, mode: str):
    """files.put of roles/<role>/templates/<name>.j2, rendered as Ansible's template would."""
    return files.put(
        name=f"Render {template} to {dest}",
        src=io.StringIO(render(template, v)),
        dest=dest,
        user=user,
        group=group,
        mode=mode,
    )


def put_drop_in(template: str, directory: str, filename: str, v: dict):
    """A root-owned drop-in directory and a root 0644 file rendered into it (systemd, journald,
    postgresql-common read such directories)."""
    files.directory(
        name=f"Create the drop-in directory {directory}",
        path=directory,
        user="root",
        group="root",
        mode="0755",
    )
    return put_template(template, f"{directory}/{filename}", v, "root", "root", "0644")
