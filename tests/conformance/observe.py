"""Run inside a conformance container (python3 observe.py [CURSOR]): what is on the host, as
JSON on stdout. The journal's events after CURSOR (none without one): the fixture units'
start/stop/reload jobs as systemd logged them, systemd's daemon reloads and the command actions'
lines (tag ``conformance``), in journal order; the fixture's files (type, mode, owner, group,
sha1 or link target); each fixture unit's state; and the journal's cursor to start from next.
Standard library only: the host has no test dependencies."""

import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

ROOTS = [
    "/etc/conformance",
    "/srv/conformance",
    "/usr/local/lib/conformance",
    "/var/lib/conffix",
    "/var/log/conformance-commands.log",
    "/etc/ansible/facts.d/grimbots_pending.fact",
]
UNITS = [f"conf-{n}.service" for n in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")]


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def cursor() -> str:
    out = run("journalctl", "-q", "-n", "0", "--show-cursor")
    return out.strip().removeprefix("-- cursor: ")


def event(entry: dict) -> str | None:
    """One line per event that says what happened, or None for an entry that is not one."""
    message = entry.get("MESSAGE")
    if not isinstance(message, str):
        return None
    if entry.get("SYSLOG_IDENTIFIER") == "conformance":
        return message
    if entry.get("_PID") != "1":
        return None
    if message == "Reloading.":
        return "systemd daemon-reload"
    unit = entry.get("UNIT", "")
    if unit in UNITS and entry.get("JOB_TYPE"):
        return f"{unit} {message.split()[0]} (job {entry['JOB_TYPE']})"
    return None


def events(after: str) -> list[str]:
    out = run("journalctl", "-o", "json", "--no-pager", f"--after-cursor={after}")
    found = (event(json.loads(line)) for line in out.splitlines() if line.strip())
    return [e for e in found if e]


def describe(path: Path) -> str:
    st = path.lstat()
    owner = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    if path.is_symlink():
        return f"{path} link -> {os.readlink(path)}"
    if path.is_dir():
        return f"{path} dir {mode} {owner}"
    data = path.read_bytes()
    digest = hashlib.sha1(data).hexdigest()  # noqa: S324 - a change marker
    # The pending actions in clear (small JSON), so that a diff says which action differs.
    shown = f" {json.dumps(json.loads(data))}" if path.name.endswith(".fact") else ""
    return f"{path} file {mode} {owner} sha1={digest}{shown}"


def files() -> list[str]:
    paths: list[Path] = []
    for root in map(Path, ROOTS):
        if root.exists():
            paths.append(root)
            paths.extend(root.rglob("*") if root.is_dir() else [])
    for pattern in ("conf-*", "*.wants/conf-*"):
        paths.extend(Path("/etc/systemd/system").glob(pattern))
    return [describe(p) for p in sorted(set(paths))]


def units() -> list[str]:
    props = ["ActiveState", "UnitFileState"]
    out = run("systemctl", "show", *(f"-p{p}" for p in props), *UNITS)
    blocks = [b.split("\n") for b in out.strip().split("\n\n")]
    return [f"{u} {' '.join(sorted(b))}" for u, b in zip(UNITS, blocks, strict=True)]


if __name__ == "__main__":
    after = sys.argv[1] if len(sys.argv) > 1 else ""
    record = {"cursor": cursor(), "events": events(after) if after else []}
    if after:
        record |= {"files": files(), "units": units()}
    json.dump(record, sys.stdout, indent=1)
