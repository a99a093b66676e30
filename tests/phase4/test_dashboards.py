"""Phase 4 on the lab: every dashboard query returns data (issue 10).

A rule's expression may rightly return nothing while all is well; a dashboard panel must not be
empty on a platform that runs. About ten panels show what only traffic or failures of the last
five minutes produce, so the test makes them happen through the real platform first:

- /start updates to the demo bot's webhook through HAProxy over HTTPS (webhook latency, updates
  accepted, processing time, messages sent, active users), one of them delivered twice (the
  duplicates panel);
- the fake Telegram answering 500, 429 and 403 for chats of this test only (Telegram errors by
  type). The 500s outlast the client's own retries, so that update's job fails once and RQ's
  retry delivers the welcome (failed jobs);
- clicks on a tracking link whose pool has no bot: the app's 503 "no bot available for this
  link" (the 5xx panels). The pool is made through the seller API, by a seller of this test's own.

Then it polls the lab's Prometheus until every dashboard query (scripts/check_promql.py's list,
$__rate_interval replaced as there) returns a series, prints every query with its count and
fails naming the dashboard and panel of each that stayed empty. Every loop is bounded in count
and time, and the injected faults are dropped in a finally.
"""

from __future__ import annotations

import json
import random
import shlex
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

import grimbots_lab as lab2
from grimbots.settings import Settings
from grimbots_lab import start_update

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Fresh chats with a /start each: a few dozen requests, enough for every rate and quantile.
STARTS = 30
# Clicks on the link without a bot: each is one app 503. Few, so the 5xx ratio of the window
# stays far below App5xxRatio's 1 % next to HAProxy's health checks (several a second).
NO_BOT_CLICKS = 2
# Deliveries of one update while it is not answered 200 (as Telegram repeats).
DELIVERY_ATTEMPTS = 5
# The faults' effects at the fake Telegram: the failed job's RQ retry comes 2 s later.
FAULT_WAIT = 60.0
# Scrapes every 15 s and rates need two samples of a series: a few scrapes, with margin.
PROMETHEUS_WAIT = 150.0
PROMETHEUS_POLL = 5.0
SELLER_EMAIL = "dashboards@grimbots.local"
SELLER_NAME = "Dashboards check"
NO_BOT_SLUG = "dashboards-no-bot"

# A seller of the test's own and a fresh token for it (only the hash is stored, so the token is
# issued again on every run), made on the app host with the app's code and database settings.
_SELLER_TOKEN = lab2.app_script("""
import json, sys
from sqlalchemy import select
from grimbots.auth import create_seller, rotate_token
from grimbots.db import Database
from grimbots.models import Seller
db = Database(os.environ["GRIMBOTS_DATABASE_URL"], pool_size=1, max_overflow=0)
with db.session() as session:
    seller = session.scalar(select(Seller).where(Seller.email == sys.argv[1]))
    if seller is None:
        seller, token = create_seller(session, sys.argv[2], sys.argv[1])
    else:
        token = rotate_token(session, seller)
    seller_id = seller.id
print(json.dumps({"seller_id": seller_id, "token": token}))
""")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _fake(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One call to the fake Telegram's control surface: (status, parsed JSON)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - lab address
            return resp.status, _json(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())


def deliver(public, bot: dict, update: dict) -> tuple[int, Any]:
    """POST an update as Telegram does: the same bytes again, a second later, while it is not
    answered 200 (DELIVERY_ATTEMPTS at most). The last (status, parsed body)."""
    path = f"/webhook/telegram/{bot['bot_id']}"
    headers = {"Content-Type": "application/json", SECRET_HEADER: bot["webhook_secret"]}
    body = json.dumps(update).encode()
    status, raw = 0, b""
    for attempt in range(DELIVERY_ATTEMPTS):
        if attempt:
            time.sleep(1.0)
        answer = public.request("POST", path, body, headers)
        status, raw = answer.status, answer.body or answer.error.encode()
        if status == 200:
            break
    return status, _json(raw) if status else raw.decode()


def telegram_attempts(app_vars: dict) -> int:
    """Requests the app's Telegram client makes for one send before it gives up (retries + 1),
    as the app reads its setting: the inventory's environment, else the app's default."""
    extra = app_vars.get("grimbots_extra_env") or {}
    retries = extra.get("GRIMBOTS_TELEGRAM_MAX_RETRIES", Settings.telegram_max_retries)
    return int(retries) + 1


def fault_outcome(statuses: list[int], want: list[int], then_ok: bool) -> bool:
    """True once a chat's answers at the fake Telegram hold every status of `want` (as many
    times as listed) and, with `then_ok`, a 200 after them (the send that got through)."""
    rest = list(statuses)
    for status in want:
        if status not in rest:
            return False
        rest = rest[rest.index(status) + 1 :]
    return not then_ok or 200 in rest


def evaluate_pending(check_promql, base: str, auth, queries, results: dict) -> None:
    """Evaluate each query without a series yet; results[i] = (series, error)."""
    for i, (_, expr) in enumerate(queries):
        if results.get(i, (0, ""))[0] > 0:
            continue
        try:
            ok, error, count = check_promql.evaluate(base, expr, auth)
        except (OSError, ValueError) as exc:  # no answer, or not JSON: try again next round
            ok, error, count = False, f"{type(exc).__name__}: {exc}", 0
        results[i] = (count, "" if ok else error)


def table(queries, results: dict) -> str:
    """Every query with its series count ('error' when it did not evaluate), one a line."""
    lines = []
    for i, (where, expr) in enumerate(queries):
        count, error = results.get(i, (0, "not evaluated"))
        mark = "error" if error else str(count)
        note = "" if count and not error else "   <- " + (error or "EMPTY")
        lines.append(f"  {mark:>5}  {where:<58} {expr}{note}")
    return "\n".join(lines)


def empty(queries, results: dict) -> list[str]:
    """'dashboard / panel: expression' of every query without a series (or with an error)."""
    out = []
    for i, (where, expr) in enumerate(queries):
        count, error = results.get(i, (0, "not evaluated"))
        if error or not count:
            out.append(f"{where}: {expr}" + (f" ({error})" if error else ""))
    return out


@pytest.fixture(scope="module")
def seller_token(lab, app_name) -> str:
    app = lab.hosts[app_name]
    command = f"{lab2.APP_PYTHON} - {SELLER_EMAIL} {shlex.quote(SELLER_NAME)}"
    run = lab2.ssh(app, command, stdin=_SELLER_TOKEN, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])["token"]


def ensure_pool_without_bot(public, token: str) -> str:
    """The seller's pool NO_BOT_SLUG with no bot, made through the API (found on later runs)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"slug": NO_BOT_SLUG}).encode()
    answer = public.request("POST", "/api/pools", body, headers)
    status, raw = answer.status, answer.body
    if status == 201:
        return ""
    if status != 409:
        return f"POST /api/pools answered {status}: {raw[:300]!r}"
    answer = public.request("GET", "/api/pools?limit=200", None, headers)
    status, raw = answer.status, answer.body
    pools = (_json(raw) or {}).get("items", []) if status == 200 else []
    mine = [p for p in pools if p.get("slug") == NO_BOT_SLUG]
    if not mine:
        return f"slug {NO_BOT_SLUG} is taken by a pool of another seller"
    if mine[0].get("bots"):
        return f"pool {NO_BOT_SLUG} has bots: {mine[0]['bots']}"
    return ""


def click_without_bot(public) -> list[int]:
    """Statuses of NO_BOT_CLICKS clicks, once the new pool is visible to the app (a read may go
    to a standby: 404 until it replayed the pool, bounded)."""
    statuses: list[int] = []
    deadline = time.monotonic() + 30
    for _ in range(60):
        status = public.request("GET", f"/go/{NO_BOT_SLUG}").status
        statuses.append(status)
        if statuses.count(503) >= NO_BOT_CLICKS or time.monotonic() > deadline:
            break
        if status != 503:
            time.sleep(0.5)
    return statuses


def test_every_dashboard_query_returns_data_once_the_platform_saw_traffic_and_faults(
    app_vars, demo_bot, public, telegram_url, seller_token, check_promql, prometheus_access
):
    queries = check_promql.dashboard_expressions()
    assert queries, "no dashboard query in roles/monitoring/files/dashboards"
    chats = random.sample(range(10**9, 2 * 10**9), STARTS + 4)
    ok_chats, (c500, c429, c403, c_twice) = chats[:STARTS], chats[STARTS:]
    update_id = random.randint(10**6, 10**9)
    attempts = telegram_attempts(app_vars)
    # Scoped to this test's chats: nobody else's sends (alerts, other suites) meet them.
    faults = {
        c500: ({"status": 500, "count": attempts, "chat_id": c500}, [500] * attempts, True),
        c429: ({"status": 429, "retry_after": 1, "count": 1, "chat_id": c429}, [429], True),
        c403: ({"status": 403, "count": 1, "chat_id": c403}, [403], False),
    }
    problems: list[str] = []
    started = time.monotonic()
    try:
        for spec, _, _ in faults.values():
            status, answer = _fake(telegram_url, "POST", "/_faults", spec)
            assert status == 200, f"the fake Telegram refused fault {spec}: {status} {answer}"
        # The faulted chats first: their retries run while the rest is sent.
        for chat in [c500, c429, c403, *ok_chats]:
            status, answer = deliver(public, demo_bot, start_update(update_id, chat))
            if status != 200:
                problems.append(f"/start of chat {chat} (update {update_id}): {status} {answer}")
            update_id += 1
        twice = start_update(update_id, c_twice)
        first, second = deliver(public, demo_bot, twice), deliver(public, demo_bot, twice)
        if first[0] != 200 or second[0] != 200 or not (second[1] or {}).get("duplicate"):
            problems.append(f"update {update_id} delivered twice: {first}, then {second}")
        problem = ensure_pool_without_bot(public, seller_token)
        clicks = click_without_bot(public) if not problem else []
        if problem or clicks.count(503) < NO_BOT_CLICKS:
            problems.append(problem or f"/go/{NO_BOT_SLUG} answered {clicks}, not 503")

        def statuses(chat: int) -> list[int]:
            status, calls = _fake(telegram_url, "GET", f"/_calls?chat_id={chat}")
            return [c["status"] for c in calls] if status == 200 and calls else []

        def settled() -> bool:
            return all(fault_outcome(statuses(c), w, ok) for c, (_, w, ok) in faults.items())

        lab2.wait_for(settled, timeout=FAULT_WAIT, interval=2)
        for chat, (spec, want, then_ok) in faults.items():
            seen = statuses(chat)
            if not fault_outcome(seen, want, then_ok):
                wanted = want + [200] if then_ok else want
                problems.append(f"fault {spec}: the chat's sends got {seen}, expected {wanted}")
    finally:
        _fake(telegram_url, "DELETE", "/_faults")
    driven = time.monotonic() - started

    base, auth = prometheus_access
    results: dict[int, tuple[int, str]] = {}
    polling = time.monotonic()
    deadline = polling + PROMETHEUS_WAIT
    for _ in range(int(PROMETHEUS_WAIT / PROMETHEUS_POLL) + 1):
        evaluate_pending(check_promql, base, auth, queries, results)
        if not empty(queries, results) or time.monotonic() >= deadline:
            break
        time.sleep(PROMETHEUS_POLL)
    waited = time.monotonic() - polling
    print(
        f"\nDASHBOARD QUERIES: series each returned at {base} ({driven:.0f} s of traffic and "
        f"faults, then {waited:.0f} s of polling):\n{table(queries, results)}"
    )
    if problems:
        print("TRAFFIC AND FAULTS:\n" + "\n".join(f"  {p}" for p in problems))
    missing = empty(queries, results)
    assert not missing and not problems, (
        f"{len(missing)} of {len(queries)} dashboard queries returned no series:\n  "
        + "\n  ".join(missing)
        + ("\nwhat the traffic and faults met:\n  " + "\n  ".join(problems) if problems else "")
    )
