# The controller half of grimbots_files: renders a role's templates (as ansible.builtin.template
# does: same Templar, settings and include path, so grimbots_infra.render gives the same bytes)
# and reads its files/, then sends every directory and file of the stage in one module call.
# Returns which manifest items changed (changed_items), for their on_change actions.

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

OVERRIDES = {"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"}


def _on(item: dict) -> bool:
    return boolean(item.get("when", True), strict=False)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("role_dir", "directories", "templates", "files"))

    def _render(self, role_dir: str, src: str, task_vars: dict) -> str:
        path = os.path.join(role_dir, "templates", src)
        if not os.path.isfile(path):
            raise AnsibleActionFail(f"{path} does not exist")
        searchpath = [os.path.join(role_dir, "templates"), role_dir, os.path.dirname(path)]
        templar = self._templar.copy_with_new_env(
            searchpath=searchpath, available_variables=task_vars
        )
        text = templar.template(
            trust_as_template(self._loader.get_text_file_contents(path)),
            escape_backslashes=False,
            overrides=OVERRIDES,
        )
        return "" if text is None else str(text)

    def _read(self, role_dir: str, src: str) -> str:
        path = os.path.join(role_dir, "files", src)
        if not os.path.isfile(path):
            raise AnsibleActionFail(f"{path} does not exist")
        return self._loader.get_text_file_contents(path)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        role_dir = args["role_dir"]
        directories = [
            {k: d[k] for k in ("path", "owner", "group", "mode")}
            for d in args.get("directories") or []
            if _on(d)
        ]
        items, files, secrets = [], [], []
        for kind, render in (("templates", True), ("files", False)):
            for item in args.get(kind) or []:
                if not _on(item):
                    continue
                text = (
                    self._render(role_dir, item["src"], task_vars)
                    if render
                    else self._read(role_dir, item["src"])
                )
                spec = {k: item[k] for k in ("dest", "owner", "group", "mode")}
                spec["force"] = boolean(item.get("force", True), strict=False)
                if item.get("validate"):
                    spec["validate"] = item["validate"]
                if boolean(item.get("secret", False), strict=False):
                    spec["secret"] = len(secrets)
                    secrets.append(text)
                else:
                    spec["content"] = text
                items.append(item)
                files.append(spec)
        out = self._execute_module(
            module_name="grimbots_files",
            module_args={"directories": directories, "files": files, "secrets": secrets},
            task_vars=task_vars,
        )
        out.pop("invocation", None)
        changed = set(out.get("changed_files", []))
        result.update(out)
        result.update(
            changed=bool(changed or out.get("changed_directories")),
            changed_directories=out.get("changed_directories", []),
            changed_files=[i["dest"] for i in items if i["dest"] in changed],
            changed_items=[i for i in items if i["dest"] in changed],
        )
        return result
