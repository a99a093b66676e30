"""Deploy phase 3 while Telegram keeps calling app1, and prove the Redis switch loses nothing.

    GRIMBOTS_LAB_PHASE=3 python tests/phase3/switch_probe.py ansible|pyinfra

(scripts/test-lab.sh runs the phase-3 deploy through it.) Before the deploy it records what the
phase-2 Redis on app1 holds: the jobs scheduled for later (downsells hours ahead) and the app's
state keys with more than an hour to live (tracking tokens). During the deploy, /start updates
for new chats go to app1's webhook at PROBE_RATE per second, each delivered again a second later
until it is answered 200, as Telegram does. After it:
- the intake pause is printed: the longest time between the first update not answered 200 and
  the next one answered 200 (goal: under 10 s);
- every scheduled job is scheduled on the queue Redis at the same time, every state key is on
  the cluster with a time to live no longer than before;
- every update sent got exactly one welcome at the fake Telegram.
Exit status 0 only when the deploy succeeded and nothing was lost or doubled.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/conftest.py's http()

from conftest import http  # noqa: E402

import grimbots_lab as lab2  # noqa: E402
from grimbots_lab import Redelivering, start_update  # noqa: E402

RATE = float(os.environ.get("PROBE_RATE", "5"))  # updates/s offered during the deploy
PAUSE_GOAL = 10.0
REDELIVERY_DEADLINE = 180.0  # seconds after the deploy for every update to be answered 200
ANSWER_DEADLINE = 180.0
WELCOME_METHODS = {"sendPhoto", "sendVideo", "sendMessage"}

# Runs on app1 with the services' environment files: what a Redis holds. "old" reads the local
# phase-2 Redis; "new" reads the queue Redis and the cluster the app uses from phase 3, and the
# status of the jobs named (a job whose time came during the deploy ran: "finished").
SNAPSHOT = lab2.app_script(r"""
import json, sys, time
import redis
from grimbots.queues import QUEUE_NAMES
from grimbots.redis_move import EPHEMERAL_KEY, is_queue_key
from grimbots.settings import Settings
settings = Settings.from_env()
if sys.argv[1] == "old":
    password = settings.redis_password or None
    queue = state = redis.Redis(host="127.0.0.1", port=6379, password=password)
else:
    from grimbots.redis_pool import RedisPools
    pools = RedisPools(settings)
    queue, state = pools.queue(), pools.state()
scheduled = {}
for name in QUEUE_NAMES:
    for job, score in queue.zrange(f"rq:scheduled:{name}", 0, -1, withscores=True):
        scheduled[(job.decode() if isinstance(job, bytes) else job)] = score
ttls = {}
if sys.argv[1] == "old":
    for key in state.scan_iter(count=1000):
        name = key.decode()
        if name.startswith("gb:") and not is_queue_key(name) and not EPHEMERAL_KEY.match(name):
            ttl = state.pttl(key)
            if ttl > 3600 * 1000:  # outlives the deploy (rate-limit windows and locks may not)
                ttls[name] = ttl
else:
    for name in json.loads(sys.argv[2]):
        ttls[name] = state.pttl(name)
statuses = {}
for job in json.loads(sys.argv[3]):
    status = queue.hget(f"rq:job:{job}", "status")
    statuses[job] = status.decode() if status else None
print(json.dumps({"scheduled": scheduled, "ttls": ttls, "statuses": statuses, "now": time.time()}))
""")


def snapshot(
    app1: dict, which: str, keys: list[str] | None = None, jobs: list[str] | None = None
) -> dict:
    import shlex

    args = f"{which} {shlex.quote(json.dumps(keys or []))} {shlex.quote(json.dumps(jobs or []))}"
    run = lab2.ssh(app1, f"{lab2.APP_PYTHON} - {args}", stdin=SNAPSHOT, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _click(url: str) -> int:
    """A visitor's GET of an ad's /go link; the redirect to t.me is not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main(tool: str) -> int:
    lab = lab2.load_lab()
    app1 = lab.hosts[lab.vars(lab.groups["app"][0])["platform_first_app_host"]]
    tg = lab.hosts[lab.groups["telegram"][0]]
    telegram_url = f"http://{tg['ansible_host']}:{tg['platform_ports']['fake_telegram']}"
    seeded = lab2.ssh(app1, f"{lab2.APP_CLI} seed-demo")
    assert seeded.returncode == 0, seeded.stderr
    bot = json.loads(seeded.stdout[seeded.stdout.index("{") :])
    moved = lab2.ssh(app1, "systemctl is-active --quiet redis-server").returncode != 0
    url = f"http://{app1['ansible_host']}:{app1['grimbots_web_port']}"
    if not moved:  # ads' clicks: each /go leaves a tracking token (a day to live) to be moved
        clicks = [_click(f"{url}/go/{bot['pool_slug']}?utm_source=switch") for _ in range(5)]
        assert clicks == [302] * 5, clicks
    before = None if moved else snapshot(app1, "old")
    telegram = Redelivering(f"{url}/webhook/telegram/{bot['bot_id']}", bot["webhook_secret"])
    base_chat, base_update = random.randint(10**9, 2 * 10**9), random.randint(10**6, 10**9)
    sent: list[int] = []
    done = threading.Event()

    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = []

        def offer():
            start = time.monotonic()
            while not done.is_set() and len(sent) < 5000:  # bounded: 1000 s at 5/s
                i = len(sent)
                time.sleep(max(0.0, start + i / RATE - time.monotonic()))
                sent.append(base_chat + i)
                futures.append(
                    pool.submit(telegram.deliver, start_update(base_update + i, sent[-1], "Switch"))
                )

        sender = threading.Thread(target=offer, daemon=True)
        sender.start()
        began = time.monotonic()
        deploy = subprocess.run(lab2.deploy_command(tool, 3), cwd=lab2.ROOT, timeout=1500)
        took = time.monotonic() - began
        done.set()
        sender.join(timeout=10)
        telegram.deadline = time.monotonic() + REDELIVERY_DEADLINE
        accepted = sum(f.result() for f in futures)
    print(f"\nswitch probe: phase-3 deploy with {tool} took {took:.0f} s, exit {deploy.returncode}")
    if deploy.returncode != 0:
        return 1
    pause, refused = telegram.longest_pause(), telegram.refused
    met = "met" if pause < PAUSE_GOAL else "MISSED"
    print(
        f"switch probe: {len(sent)} updates at {RATE:.0f}/s, {accepted} answered 200, "
        f"{refused} answers not 200 (redelivered); longest intake pause {pause:.1f} s "
        f"(goal under {PAUSE_GOAL:.0f} s: {met})"
    )
    problems = []
    if accepted != len(sent):
        problems.append(f"{len(sent) - accepted} updates never answered 200")
    if before is not None:
        after = snapshot(app1, "new", sorted(before["ttls"]), sorted(before["scheduled"]))
        # Kept: still scheduled at the same time, or its time came during the deploy and it ran.
        ran = {
            j for j, at in before["scheduled"].items()
            if at <= after["now"] and after["statuses"].get(j) == "finished"
        }  # fmt: skip
        lost = [
            j for j, at in before["scheduled"].items()
            if after["scheduled"].get(j) != at and j not in ran
        ]  # fmt: skip
        bad_ttl = {
            k: after["ttls"][k] for k, t in before["ttls"].items() if not 0 < after["ttls"][k] <= t
        }
        print(
            f"switch probe: {len(before['scheduled'])} scheduled jobs before, "
            f"{len(before['scheduled']) - len(lost) - len(ran)} scheduled at the same time after, "
            f"{len(ran)} ran when due during the deploy; "
            f"{len(before['ttls'])} long-lived state keys, {len(bad_ttl)} missing or longer"
        )
        problems += [f"scheduled job {j} not kept" for j in lost[:5]]
        problems += [
            f"state key {k}: time to live {t} after the move" for k, t in list(bad_ttl.items())[:5]
        ]
    else:
        print("switch probe: app1's local Redis was already retired: nothing to move")
    chats = set(sent)

    def welcomes() -> dict[int, int]:
        status, calls = http("GET", f"{telegram_url}/_calls", timeout=30)
        assert status == 200, calls
        seen = dict.fromkeys(chats, 0)
        for call in calls:
            if call["method"] in WELCOME_METHODS and call.get("ok") and call["chat_id"] in seen:
                seen[call["chat_id"]] += 1
        return seen

    lab2.wait_for(lambda: all(n >= 1 for n in welcomes().values()), ANSWER_DEADLINE, 2)
    time.sleep(5)  # a late duplicate would arrive now
    final = welcomes()
    missing = [c for c, n in final.items() if n == 0]
    doubled = [c for c, n in final.items() if n > 1]
    print(
        f"switch probe: welcomes: {len(missing)} chats missing, {len(doubled)} with more than one"
    )
    problems += [f"{len(missing)} chats got no welcome"] if missing else []
    problems += [f"{len(doubled)} chats welcomed more than once"] if doubled else []
    for problem in problems:
        print(f"switch probe: FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("ansible", "pyinfra"):
        sys.exit("usage: python tests/phase3/switch_probe.py ansible|pyinfra")
    sys.exit(main(sys.argv[1]))
