"""Both deploy tools give one meaning to every manifest key: the same fixture roles
(tests/conformance/roles) go through Ansible (site.yml) and through pyinfra (deploy.py), each on
its own fresh lab-image container, in the same steps; after each step what happened on the host
(files with mode, owner and sha1, units' states, and in order: units started, stopped, reloaded,
systemd's daemon reloads, the command actions' lines, the pending-actions file) must be the
same for both. Any divergence fails with a diff.

    PYTHONPATH=infra/src .venv/bin/pytest -p no:cacheprovider -q tests/conformance

Both tools reach their container with `docker exec` (Ansible's community.docker.docker
connection, pyinfra's @docker connector on a running container): no keys, no addresses, and
nothing of the connection differs between the two. Containers and network are named
grimbots-conf-* and removed at the end.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent
IMAGE = os.environ.get("GRIMBOTS_LAB_IMAGE", "grimbots-lab:latest")
NETWORK = "grimbots-conf"
TOOLS = ("ansible", "pyinfra")
RUN_TIMEOUT = 300
SYSTEMD_FLAGS = [
    "--cap-add=SYS_ADMIN",
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
    "--tmpfs=/run",
    "--tmpfs=/run/lock",
    "--volume=/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--cgroupns=host",
    "--stop-signal=SIGRTMIN+3",
]
# conf-delta's start waits for this file: a start or restart asked without waiting (no_block)
# completes only after the run, when the suite creates it; a tool that waited would hang.
GATE = "/run/conformance-gate"

GEN2 = {"conf_units_generation": 2, "conf_templates_generation": 2}
GEN3 = {**GEN2, "conf_templates_generation": 3, "conf_templates_token": "another-stand-in"}
# (what the step does, extra variables, None for a run that succeeds or what both tools' output
# says when the run fails as it must)
STEPS: list[tuple[str, dict[str, Any], str | None]] = [
    ("first apply on an empty host", {}, None),
    ("a change of the variables (restarts, reloads, daemon reload, command)", GEN2, None),
    ("a rerun with nothing changed", GEN2, None),
    (
        "a change, the run stopped before conf_templates' service stage",
        {**GEN3, "platform_fail_before_service": "conf_templates"},
        "platform_fail_before_service",
    ),
    ("a rerun: the actions the stopped run left pending", GEN3, None),
    (
        "a template its validator rejects: nothing lands, nothing is left pending",
        {**GEN3, "conf_templates_valid": False},
        "/etc/conformance/templates/beta.conf",
    ),
]


# Steps to run (all unless CONFORMANCE_STEPS says how many: a quicker look while editing).
LAST_STEP = int(os.environ.get("CONFORMANCE_STEPS", len(STEPS)))


def _restart(unit: str) -> list[str]:
    jobs = (("Stopping", "stop"), ("Stopped", "restart"), ("Started", "start"))
    return [f"conf-{unit}.service {verb} (job {job})" for verb, job in jobs]


# The events docs/deploy-tools.md prescribes for a step, whichever tool ran it. Step 2: conf_units'
# daemon reload first (listed after the restart), then its restart; conf_templates' unit actions
# in the manifest's order (two units of one action in theirs), its command after them.
DOCUMENTED: dict[int, list[str]] = {
    2: [
        "systemd daemon-reload",
        *_restart("alpha"),
        "conf-beta.service Reloading (job reload)",
        "conf-beta.service Reloaded (job reload)",
        *_restart("zeta"),
        *_restart("alpha"),
        "command templates-changed",
        "end of the run",
    ],
    3: ["end of the run"],
}


def docker(*argv: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        ["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def container(tool: str) -> str:
    return f"grimbots-conf-{tool}"


def _remove() -> None:
    for tool in TOOLS:
        docker("rm", "-f", container(tool), check=False)
    docker("network", "rm", NETWORK, check=False)


def _start(tool: str) -> None:
    name = container(tool)
    docker("create", "--name", name, "--hostname", "conformance", "--network", NETWORK,
           *SYSTEMD_FLAGS, IMAGE, "/sbin/init")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:  # its own machine-id: the image's is shared
        machine_id = Path(tmp) / "machine-id"
        machine_id.write_text(uuid.uuid4().hex + "\n")
        docker("cp", str(machine_id), f"{name}:/etc/machine-id")
    docker("start", name)
    deadline, state = time.monotonic() + 120, ""
    while state not in ("running", "degraded") and time.monotonic() < deadline:
        time.sleep(0.5)  # until PID 1 answers on its bus, then until it finished booting
        state = docker("exec", name, "systemctl", "is-system-running", "--wait", check=False)
        state = state.strip()
    assert state in ("running", "degraded"), f"{name}: systemd is {state!r}"
    docker("cp", str(HERE / "observe.py"), f"{name}:/root/observe.py")


@pytest.fixture(scope="module")
def hosts():
    """Two fresh containers of the lab image on an internal network, one per tool."""
    _remove()
    docker("network", "create", "--internal", NETWORK)
    try:
        with concurrent.futures.ThreadPoolExecutor(len(TOOLS)) as pool:
            list(pool.map(_start, TOOLS))
        yield
    finally:
        _remove()


def _env(tool: str) -> dict[str, str]:
    roles = f"{HERE / 'roles'}{os.pathsep}{ROOT / 'roles'}"
    return {
        **os.environ,
        "ANSIBLE_ROLES_PATH": roles,
        "GRIMBOTS_CONFORMANCE_CONTAINER": container(tool),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PIPELINING": "1",
    }


def deploy(tool: str, extra: dict[str, Any]) -> subprocess.CompletedProcess:
    """One run of the fixture roles with ``tool`` on its container."""
    if tool == "ansible":
        argv = [str(BIN / "ansible-playbook"), "-i", str(HERE / "inventory"),
                str(HERE / "site.yml"), "-e", json.dumps(extra)]  # fmt: skip
    else:
        argv = [str(BIN / "pyinfra"), "-y", f"@docker/{container(tool)}", str(HERE / "deploy.py"),
                "--data", f"grimbots_extra_vars={json.dumps(extra)}"]  # fmt: skip
    try:
        return subprocess.run(argv, cwd=ROOT, env=_env(tool), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if exc.stdout else ""
        return subprocess.CompletedProcess(argv, -1, out, f"timed out after {RUN_TIMEOUT} s")


def observe(tool: str, cursor: str | None = None) -> dict[str, Any]:
    argv = ["exec", container(tool), "python3", "/root/observe.py"] + ([cursor] if cursor else [])
    return json.loads(docker(*argv))


def settle(tool: str) -> None:
    """After a run: mark its end in the journal, let conf-delta's start through and wait until
    systemd has no job left (what was asked without waiting completes after the mark)."""
    script = (
        "logger -t conformance 'end of the run'; touch " + GATE + "; "
        'for _ in $(seq 300); do [ -z "$(systemctl list-jobs --no-legend)" ] && break; '
        "sleep 0.1; done; rm -f " + GATE
    )
    docker("exec", container(tool), "sh", "-c", script)


def step(tool: str, extra: dict[str, Any]) -> tuple[dict[str, Any], subprocess.CompletedProcess]:
    cursor = observe(tool)["cursor"]
    started = time.monotonic()
    done = deploy(tool, extra)
    took = time.monotonic() - started
    settle(tool)
    record = observe(tool, cursor)
    record.pop("cursor")
    record["run"] = "succeeded" if done.returncode == 0 else "failed"
    print(f"  {tool}: {record['run']} in {took:.1f} s, {len(record['events'])} events")
    return record, done


def lines(record: dict[str, Any]) -> list[str]:
    out = [f"run {record['run']}"]
    for key in ("events", "files", "units"):
        out += [f"[{key}]", *record[key]]
    return out


def test_both_tools_do_the_same_on_the_host(hosts):
    for number, (what, extra, failure) in enumerate(STEPS[:LAST_STEP], 1):
        print(f"step {number}: {what}")
        with concurrent.futures.ThreadPoolExecutor(len(TOOLS)) as pool:
            runs = pool.map(step, TOOLS, [extra] * len(TOOLS))
            results = dict(zip(TOOLS, runs, strict=True))
        for tool, (record, done) in results.items():
            out = (done.stdout + done.stderr)[-4000:]
            assert record["run"] == ("failed" if failure else "succeeded"), f"{tool}:\n{out}"
            assert not failure or failure in out, f"{tool} failed otherwise:\n{out}"
        records = {tool: lines(record) for tool, (record, _) in results.items()}
        print("\n".join(f"    {e}" for e in results["ansible"][0]["events"]))
        diff = list(difflib.unified_diff(records["ansible"], records["pyinfra"],
                                         "ansible", "pyinfra", lineterm="", n=4))  # fmt: skip
        assert not diff, f"step {number} ({what}): the tools differ on the host\n" + "\n".join(diff)
        if number in DOCUMENTED:  # not only equal: what docs/deploy-tools.md says happens
            assert results["ansible"][0]["events"] == DOCUMENTED[number]
