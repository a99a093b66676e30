"""The rolling app update under load (docs/operations.md, "Update the app"): a new release (the
same app with a bumped local version, so each node is seen to change) goes onto every app host
with pyinfra's command, then back to dist/wheels with Ansible's (GRIMBOTS_ROLLING_TOOLS), while
Telegram's side sends RATE /start updates a second to the demo bot through HAProxy over HTTPS and
delivers again every update not answered 200 (chaos's Load and the telegram
fixture). It must refuse nothing: 0 non-2xx answers (first tries or not), 0 updates lost, 0
chats welcomed twice, and after each command every app host runs the release it installed. The
figures are printed. With an even number of commands the lab ends on dist/wheels; CI runs
pyinfra's alone, last on the pyinfra pass (scripts/test-lab.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import grimbots_lab as lab2

from . import chaos as faults
from .chaos import CLIENT_TIMEOUT, RATE, REDELIVERY_DEADLINE, Load

# The updates in turn, each a tool's command: pyinfra (deploy/app_update.py), ansible
# (playbooks/app-update.yml), or phase3-<tool> (phase 3's deploy, whose app restarts go one host
# at a time too). The first goes to the new release, the second back to dist/wheels, and so on.
TOOLS = os.environ.get("GRIMBOTS_ROLLING_TOOLS", "pyinfra,ansible").split(",")
UPDATE_TIMEOUT = 600  # seconds for the whole update (every host's turn)
ANSWER_DEADLINE = 120.0  # seconds after the load for every welcome to arrive


def new_release(tmp_path) -> tuple[str, str]:
    """dist/wheels with the app's wheel rebuilt as version <version>+roll<time>: (dir, version)."""
    src = lab2.ROOT / "dist" / "wheels"
    out = tmp_path / "wheels"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("grimbots-*.whl"))
    app = tmp_path / "app"
    shutil.copytree(lab2.ROOT / "app", app, ignore=shutil.ignore_patterns("tests", "*.pyc"))
    pyproject = app / "pyproject.toml"
    text = pyproject.read_text()
    old = next(line for line in text.splitlines() if line.startswith("version = "))
    version = old.split('"')[1] + f"+roll{int(time.time())}"
    pyproject.write_text(text.replace(old, f'version = "{version}"', 1))
    subprocess.run(
        [str(lab2.ROOT / ".venv/bin/pip"), "wheel", "-q", "--no-deps", "--wheel-dir", str(out),
         str(app)],
        check=True,
        timeout=300,
    )  # fmt: skip
    (out / ".stamp").write_text(f"roll{int(time.time())}\n")
    return str(out), version


def command(tool: str, extra_vars: dict | None) -> list[str]:
    if tool.startswith("phase3-"):
        return lab2.deploy_command(tool.removeprefix("phase3-"), 3, extra_vars)
    return lab2.update_command(tool, extra_vars)


def versions(lab) -> dict[str, str]:
    """Each app host's release, from /health on loopback (where it shows the detail)."""
    seen = {}
    for name in lab.groups["app"]:
        v = lab.hosts[name]
        out = lab2.ssh(v, f"curl -s --max-time 5 http://127.0.0.1:{v['grimbots_web_port']}/health")
        try:
            seen[name] = json.loads(out.stdout).get("version", "?")
        except ValueError:
            seen[name] = f"? ({out.stdout.strip()[:80] or out.stderr.strip()[:80]})"
    return seen


def test_rolling_update_under_load_refuses_loses_and_doubles_nothing(
    lab, haproxy, telegram, welcomes, tmp_path, monkeypatch
):
    # The load's own bound (200 s there): here as long as the updates may take.
    monkeypatch.setattr(faults, "MAX_LOAD_SECONDS", len(TOOLS) * UPDATE_TIMEOUT)
    wheels, version = new_release(tmp_path)
    before = versions(lab)
    runs = []  # (tool, seconds, exit code, versions after)
    tg = telegram(
        time.monotonic() + len(TOOLS) * UPDATE_TIMEOUT + REDELIVERY_DEADLINE, CLIENT_TIMEOUT
    )
    mark = welcomes.mark()
    load = Load(tg)
    load.start()
    try:
        time.sleep(3)  # load before the first drain
        for i, tool in enumerate(TOOLS):
            # Forward to the new release, then back to dist/wheels (the lab as it was).
            extra = {"grimbots_wheels_src": wheels} if i % 2 == 0 else None
            started = time.monotonic()
            run = subprocess.run(
                command(tool, extra),
                cwd=lab2.ROOT,
                capture_output=True,
                text=True,
                timeout=UPDATE_TIMEOUT,
            )
            runs.append((tool, time.monotonic() - started, run.returncode, versions(lab)))
            if run.returncode != 0:
                print(run.stdout[-4000:], run.stderr[-2000:])
                break
        time.sleep(3)  # load after the last host is back
    finally:
        load.stop()
    tg.deadline = min(tg.deadline, time.monotonic() + REDELIVERY_DEADLINE)
    answered = load.answered(timeout=REDELIVERY_DEADLINE + 2 * CLIENT_TIMEOUT)
    count = len(load.updates)
    chats = [u["message"]["chat"]["id"] for u in load.updates]
    lab2.wait_for(
        lambda: all(n >= 1 for n in welcomes.count(chats, mark).values()),
        timeout=ANSWER_DEADLINE,
        interval=2,
    )
    time.sleep(5)  # a late duplicate would arrive now
    final = welcomes.count(chats, mark)
    lost = [c for c, n in final.items() if n == 0]
    doubled = {c: n for c, n in final.items() if n > 1}
    refused = tg.failed(tg.attempts)
    seconds = time.monotonic() - load.started
    print(f"\nROLLING UPDATE: versions before {before}")
    for tool, took, code, after in runs:
        print(f"  {tool}: {took:.0f} s, exit {code}, versions after {after}")
    print(
        f"ROLLING UPDATE: {count} updates sent at {RATE:.0f}/s through HAProxy over HTTPS for "
        f"{seconds:.0f} s; {len(tg.attempts)} deliveries; non-2xx {len(refused)} "
        f"({tg.summary(refused)}); answered {answered}/{count}; lost {len(lost)}; "
        f"doubled {len(doubled)}"
    )
    assert len(runs) == len(TOOLS) and all(code == 0 for _, _, code, _ in runs), runs
    for i, (tool, _, _, after) in enumerate(runs):
        want = version if i % 2 == 0 else before[lab.groups["app"][0]]
        assert set(after.values()) == {want}, f"after {tool}: {after}, not all on {want}"
    assert count > 0
    assert not refused, f"{len(refused)} deliveries not answered 200: {tg.summary(refused)}"
    assert answered == count, f"{count - answered} updates never answered 200"
    assert not lost, f"{len(lost)} accepted updates got no welcome, e.g. {lost[:5]}"
    assert not doubled, f"chats welcomed more than once: {list(doubled.items())[:5]}"
    assert lab2.wait_for(
        lambda: all(s["status"].startswith("UP") for s in haproxy.servers().values()),
        timeout=30,
    ), haproxy.servers()
