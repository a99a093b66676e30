"""The fault-injection suite under pytest: the invariant checker's own tests (fast), then the
seeded scenarios (FAULT_SCENARIOS, FAULT_SEED, FAULT_LANES, FAULT_KINDS; see docs/app.md)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from faults import runner
from faults.driver import Sent
from faults.invariants import check, max_in_window
from faults.scenario import KINDS, generate

TOKEN = "123:abc"


class NoRows:
    """A stand-in database with no payments, campaigns or pending rows."""

    class _Session:
        def execute(self, *_a, **_k):
            return SimpleNamespace(all=lambda: [])

        def scalars(self, *_a, **_k):
            return SimpleNamespace(all=lambda: [])

    def session(self):
        import contextlib

        return contextlib.nullcontext(self._Session())


def observation(**overrides):
    base = {
        "token": TOKEN,
        "bot_id": 1,
        "chats": {0: 42},
        "updates": [Sent(1, 0, "start", {}, [200])],
        "welcome_content": ("Oi", "sendMessage"),
        "paid_at": {},
        "blocked": set(),
        "campaign_texts": {},
        "campaign_audience": {},
        "refused_payments": [],
        "campaign_refused": [],
    }
    return SimpleNamespace(**(base | overrides))


def call(t: float, text: str = "Oi", chat: int = 42, status: int = 200, delay: float = 0.0):
    return {
        "token": TOKEN,
        "method": "sendMessage",
        "params": {"chat_id": chat, "text": text},
        "chat_key": str(chat),
        "status": status,
        "time": t,
        "delay": delay,
    }


def names(violations) -> set[str]:
    return {v.invariant for v in violations}


def test_one_welcome_per_accepted_start_passes():
    assert check(observation(), [call(100.0)], NoRows()) == []


def test_a_second_welcome_is_a_duplicate_and_breaks_the_chat_rate():
    found = names(check(observation(), [call(100.0), call(100.5)], NoRows()))
    assert found == {"duplicate welcome", "chat rate over 1/s"}


def test_a_welcome_never_sent_is_lost_unless_telegram_may_have_had_it():
    assert names(check(observation(), [], NoRows())) == {"lost welcome"}
    timed_out = call(100.0, status=502, delay=1.4)  # the client gave up; Telegram had not sent it
    assert check(observation(), [timed_out], NoRows()) == []


def test_an_update_still_refused_after_recovery_is_reported():
    refused = observation(updates=[Sent(1, 0, "start", {}, [503, 503])])
    assert "update refused for good" in names(check(refused, [], NoRows()))


def test_more_than_thirty_sends_per_second_for_a_bot_is_reported():
    burst = [call(100.0 + i * 0.02, text=f"m{i}", chat=1000 + i) for i in range(31)]
    obs = observation(updates=[])
    assert names(check(obs, burst, NoRows())) == {"bot rate over 30/s"}
    spread = [call(100.0 + i * 0.04, text=f"m{i}", chat=1000 + i) for i in range(31)]
    assert check(obs, spread, NoRows()) == []


def test_a_downsell_after_the_payment_is_reported():
    obs = observation(updates=[], paid_at={42: 100.0})
    assert check(obs, [call(99.0, "Desconto 1")], NoRows()) == []
    assert names(check(obs, [call(101.0, "Desconto 1")], NoRows())) == {"downsell after payment"}


def test_max_in_window_counts_a_half_open_window():
    assert max_in_window([0.0, 0.5, 1.0, 1.2], 1.0)[0] == 3
    assert max_in_window([0.0, 1.0, 2.0], 1.0)[0] == 1


def test_scenarios_are_reproducible_from_their_seed():
    a, b = generate(7, 3), generate(7, 3)
    assert a.describe() == b.describe()
    assert generate(7, 4).describe() != a.describe()
    only_redis = generate(7, 3, ("redis_error",))
    assert set(only_redis.kinds) <= {"redis_error"}


def test_fault_scenarios_keep_the_delivery_guarantees():
    """Hundreds of seeded scenarios; the figures are printed; no invariant may be violated."""
    kinds = runner.kinds_from_env(os.environ.get("FAULT_KINDS"))
    summary = runner.run(
        scenarios=int(os.environ.get("FAULT_SCENARIOS", runner.DEFAULT_SCENARIOS)),
        seed=int(os.environ.get("FAULT_SEED", runner.DEFAULT_SEED)),
        lanes=int(os.environ.get("FAULT_LANES", runner.DEFAULT_LANES)),
        kinds=kinds,
        timeout=runner.budget(),
    )
    report = runner.write_report(summary)
    print()
    print(summary.figures())
    print(f"failing scenarios with the fake Telegram's call log: {report}")
    if summary.failed:
        pytest.fail(f"{summary.report(5)}\n{summary.figures()}", pytrace=False)
    assert summary.results and set(kinds) <= set(KINDS)
