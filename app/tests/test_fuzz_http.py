"""No input makes any endpoint answer 5xx: property-based fuzzing of every public endpoint.

Requests come from the OpenAPI description generated from the routes' schemas (schemathesis:
inputs that fit it, and inputs that break it on purpose) and from hand-made hostile JSON
(hypothesis: any nesting, lone surrogates, integers of any size, NaN, booleans where ids are
due), sent with and without valid credentials and ids, so they reach the validation behind the
authentication. Every answer must be 2xx, 3xx or a clear 4xx. The run is seeded (derandomized)
and bounded: GRIMBOTS_FUZZ_EXAMPLES examples per operation and mode (default 20); the figures are
printed at the end of the run.

Runs on PostgreSQL, the strictest backend (it refuses NUL bytes and out-of-range integers
that SQLite stores), with real Redis.
"""

from __future__ import annotations

import io
import json
import os
import re
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from grimbots import db as db_module
from grimbots import redis_pool, telegram, webhook
from grimbots.openapi import document
from grimbots.payments import SandboxGateway, sign
from tests.conftest import GATEWAY_SECRET, PG_URL, REDIS_URL, _reset_schema, make_settings
from tests.factories import make_bot, make_funnel, make_pool, make_seller, start_update
from tests.figures import report

EXAMPLES = int(os.environ.get("GRIMBOTS_FUZZ_EXAMPLES", "20"))
HEADER = "X-Telegram-Bot-Api-Secret-Token"
FIGURES: dict[str, int] = {"cases": 0, "5xx": 0, "operations": 0, "signed_payments": 0}
FAILURES: list[str] = []

HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same cases on every run: a failure is reproducible
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def world(request):
    """The app on PostgreSQL with one seller's bot, funnel, pool and campaign to aim at."""
    import redis

    from grimbots.app import create_app
    from grimbots.models import Campaign

    redis.Redis.from_url(REDIS_URL).flushdb()
    _reset_schema(PG_URL)
    settings_ = make_settings(PG_URL)
    webhook.forget_local_bot_meta()
    db_module.reset_db()
    redis_pool.reset_pools()
    telegram.reset_client()
    db = db_module.get_db(settings_)
    redis_pool.get_pools(settings_)
    with db.session() as session:
        seller, token = make_seller(session)
        funnel = make_funnel(session, seller)
        bot = make_bot(session, seller, funnel)
        pool = make_pool(session, seller, [(bot, 1)], slug="fuzz-pool")
        campaign = Campaign(seller_id=seller.id, bot_id=bot.id, name="c", text="t", status="draft")
        session.add(campaign)
        session.flush()
        ids = {
            "bot_id": bot.id,
            "funnel_id": funnel.id,
            "pool_id": pool.id,
            "campaign_id": campaign.id,
            "slug": pool.slug,
            "gateway": "sandbox",
        }
        # The webhook's bot belongs to another seller: the admin API fuzzing cannot deactivate
        # it or change its secret, so every webhook case reaches the update's validation.
        other, _ = make_seller(session)
        hook_bot = make_bot(session, other, make_funnel(session, other))
        secret, hook_bot_id = hook_bot.webhook_secret, hook_bot.id
    app = create_app(settings_)
    app.testing = True
    workers = _register_workers()
    # Count the payment requests whose signature passed: only those reach the event's parsing.
    patch = pytest.MonkeyPatch()
    parse_event = SandboxGateway.parse_event

    def counted(self, raw_body):
        FIGURES["signed_payments"] += 1
        return parse_event(self, raw_body)

    patch.setattr(SandboxGateway, "parse_event", counted)
    yield {"app": app, "token": token, "secret": secret, "ids": ids, "hook_bot_id": hook_bot_id}
    patch.undo()
    for worker in workers:
        worker.register_death()
    if FIGURES["cases"]:
        report(
            request.config,
            f"fuzz: {FIGURES['cases']} requests generated over {FIGURES['operations']} "
            f"operation runs ({EXAMPLES} examples each), {FIGURES['5xx']} answered 5xx, "
            f"{FIGURES['signed_payments']} signed payment webhooks reached the handler",
        )
    db_module.reset_db()
    redis_pool.reset_pools()
    telegram.reset_client()
    redis.Redis.from_url(REDIS_URL).flushdb()


def _register_workers():
    """One registered RQ worker per lane, so /health is 200 while the fuzzing runs."""
    from rq import Queue, Worker

    from grimbots.queues import WORKER_LANES

    conn = redis_pool.queue_connection()
    workers = []
    for name in ("tasks", "gateway", "webhook"):
        queues = [Queue(lane, connection=conn) for lane in WORKER_LANES[name]]
        worker = Worker(queues, connection=conn, name=f"fuzz-{name}")
        worker.register_birth()
        workers.append(worker)
    return workers


def _ids_for(world: dict, path: str) -> dict:
    if path.startswith("/webhook/telegram/"):
        return {"bot_id": world["hook_bot_id"]}
    return world["ids"]


def _fill(world: dict, template: str) -> str:
    ids = _ids_for(world, template)
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), template)


def _credentials(world: dict, path: str, body: bytes) -> dict[str, str]:
    if path.startswith("/api/"):
        return {"Authorization": f"Bearer {world['token']}"}
    if path.startswith("/webhook/telegram/"):
        return {HEADER: world["secret"]}
    if path.startswith("/webhook/payment/"):
        return {"X-Signature": sign(GATEWAY_SECRET, body)}  # "sha256=<hex>", as a gateway signs
    return {}


def _reaches_payment_handler(path: str) -> bool:
    """A signed request to the sandbox gateway's webhook gets past the signature check."""
    return path == "/webhook/payment/sandbox"


def _send(world: dict, method: str, path: str, body: bytes | None, headers=None, query=None):
    """One request through the WSGI app; counts it and records any 5xx."""
    response = (
        world["app"]
        .test_client()
        .open(
            path,
            method=method,
            data=body,
            headers=headers or {},
            query_string=query,
            content_type="application/json" if body is not None else None,
        )
    )
    FIGURES["cases"] += 1
    if response.status_code >= 500:
        # Redis, PostgreSQL and a worker per queue are up during this run: even a 503 here
        # would be a bug passing for an outage.
        FIGURES["5xx"] += 1
        FAILURES.append(
            f"{method} {path} ?{query!r} -> {response.status_code}: {(body or b'')[:200]!r}"
        )
    return response


def _operations():
    return [result.ok() for result in _schema().get_all_operations()]


_loaded: list = []


def _schema():
    if not _loaded:
        _loaded.append(schemathesis.openapi.from_dict(document()))
    return _loaded[0]


def _case_body(case) -> bytes | None:
    from schemathesis.core import NOT_SET

    if case.body is NOT_SET:
        return None
    if isinstance(case.body, bytes):
        return case.body
    # Negative cases may hold values JSON has no form for: send their text instead.
    return json.dumps(case.body, default=repr).encode()


def _has_inputs(operation) -> bool:
    item = document()["paths"][operation.path]
    op = item[operation.method.lower()]
    return bool(item.get("parameters") or op.get("parameters") or op.get("requestBody"))


def _order(operation) -> tuple:
    """Reads first, changes next, deletes last: the objects aimed at exist as long as possible."""
    method = operation.method.upper()
    return (method == "DELETE", method in ("PATCH", "PUT"), operation.label)


# Negative cases (inputs that break the description) exist only for operations with inputs.
CASES = [
    (operation, mode)
    for operation in sorted(_operations(), key=_order)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or _has_inputs(operation)
]


@pytest.mark.parametrize(
    "operation, mode", CASES, ids=[f"{op.label}-{mode.value}" for op, mode in CASES]
)
def test_no_generated_request_gets_a_5xx(world, operation, mode):
    names = re.findall(r"\{(\w+)\}", operation.path)
    ids = _ids_for(world, operation.path)
    real_ids = {name: ids[name] for name in names if name in ids} or None
    strategy = st.one_of(
        operation.as_strategy(mode),
        operation.as_strategy(mode, path_parameters=real_ids) if real_ids else st.nothing(),
    )

    @HYPOTHESIS
    @given(case=strategy, authenticated=st.booleans())
    def run(case, authenticated):
        body = _case_body(case)
        path = case.formatted_path
        headers = {k: v for k, v in (case.headers or {}).items() if isinstance(v, str)}
        if authenticated:
            headers.update(_credentials(world, path, body or b""))
        _send(world, case.method.upper(), path, body, headers, case.query or None)

    if operation.path.startswith("/webhook/payment/") and real_ids:
        # One signed event to the real gateway first, then the generated cases: 20 draws of
        # {random or real gateway} x {signed or not} missed "real and signed" now and then in
        # full-suite runs (the same seed gives 3 in a run of this file).
        event = {"txid": "SBXFUZZ0", "status": "paid", "amount_cents": 100}
        run = example(
            case=operation.Case(path_parameters=real_ids, body=event), authenticated=True
        )(run)
    FIGURES["operations"] += 1
    signed_before = FIGURES["signed_payments"]
    run()
    assert not FAILURES, "\n".join(FAILURES[:10])
    if operation.path.startswith("/webhook/payment/"):
        assert FIGURES["signed_payments"] > signed_before, "no signed request got past the check"


# -- hostile JSON, sent to every endpoint that takes a body ---------------------------------------

_any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(_any_char, max_size=20)
    | st.sampled_from(["\ud800", "a\udfffb", "\x00", "²", "9" * 30, "/start \ud83d"])
)
hostile_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(_any_char, max_size=8) | st.sampled_from(["update_id"]), inner)
    ),
    max_leaves=12,
)


def _mutations(value):
    """A valid update with one leaf replaced by something hostile."""
    leaves = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, item in node.items():
                walk(item, (*path, key))
        leaves.append(path)

    walk(value, ())
    return st.tuples(st.sampled_from(leaves), hostile_json)


def _replace(value, path, new):
    if not path:
        return new
    out = dict(value)
    out[path[0]] = _replace(value[path[0]], path[1:], new)
    return out


BODY_PATHS = sorted(
    {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "requestBody" in op
    }
)


@pytest.mark.parametrize("method, template", BODY_PATHS)
def test_hostile_json_bodies_get_a_4xx_or_2xx_never_a_5xx(world, method, template):
    path = _fill(world, template)
    valid = start_update(4242)

    @HYPOTHESIS
    @given(
        value=hostile_json | st.just(valid).flatmap(_mutations).map(lambda m: _replace(valid, *m))
    )
    def run(value):
        try:
            body = json.dumps(value).encode()
        except (ValueError, RecursionError):
            return
        _send(world, method, path, body, _credentials(world, path, body))

    FIGURES["operations"] += 1
    signed_before = FIGURES["signed_payments"]
    run()
    assert not FAILURES, "\n".join(FAILURES[:10])
    if _reaches_payment_handler(path):
        assert FIGURES["signed_payments"] > signed_before, "no signed request got past the check"


@pytest.mark.parametrize(
    "name, body",
    [
        ("nesting 40 deep", b'{"update_id": 1, "message": ' + b"[" * 40 + b"]" * 40 + b"}"),
        ("nesting 100,000 deep", b"[" * 100_000 + b"]" * 100_000),
        ("100,000 unclosed brackets", b"[" * 100_000),
        (
            "lone surrogate in the text",
            b'{"update_id": 1, "message": {"chat": {"id": 1}, "text": "\\ud800"}}',
        ),
        ("lone surrogate in a key", b'{"update_id": 1, "\\udc00": 1}'),
        ("update type with a surrogate", b'{"update_id": 1, "new\\ud800kind": {}}'),
        ("id beyond 64 bits", b'{"update_id": 18446744073709551616}'),
        (
            "chat id beyond 64 bits",
            b'{"update_id": 1, "message": {"chat": {"id": 99999999999999999999}}}',
        ),
        ("true as an id", b'{"update_id": 1, "message": {"chat": {"id": true}}}'),
        ("from is a string", b'{"update_id": 1, "message": {"chat": {"id": 1}, "from": "x"}}'),
        ("NaN", b'{"update_id": NaN}'),
        ("a 5,000-digit integer", b'{"update_id": ' + b"9" * 5000 + b"}"),
        ("invalid UTF-8", b'{"update_id": 1, "x": "\xff\xfe"}'),
    ],
)
def test_crafted_bodies_from_the_issue_get_a_clear_400(world, name, body):
    for method, template in BODY_PATHS:
        path = _fill(world, template)
        signed_before = FIGURES["signed_payments"]
        response = _send(world, method, path, body, _credentials(world, path, body))
        assert 400 <= response.status_code < 500, (name, method, path, response.status_code)
        assert response.is_json
        if _reaches_payment_handler(path):
            # Past the signature: the body itself is refused, with 400, not 401.
            assert FIGURES["signed_payments"] == signed_before + 1, (name, path)
            assert response.status_code == 400, (name, path, response.status_code)


# Characters that str.isdigit() or int() accept although they are not ASCII digits.
DIGIT_LIKE = "0123456789²³¹٣۴߅०১੨૩୪௫౬೭൮๙໑༢၃႔០᠑᥆᧐᪉᭒᮳᱄᱕꘡꣒꤃꧔꩕꯶０１𝟎𝟙①½"

QUERY_PARAMS = sorted(
    {
        (method.upper(), path, param["name"])
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict)
        for param in op.get("parameters", [])
        if param.get("in") == "query"
    }
)


@pytest.mark.parametrize("method, template, name", QUERY_PARAMS)
def test_hostile_query_values_never_get_a_5xx(world, method, template, name):
    from urllib.parse import quote_from_bytes

    path = _fill(world, template)

    @HYPOTHESIS
    @given(
        value=st.sampled_from(DIGIT_LIKE)
        | st.text(st.sampled_from(DIGIT_LIKE), min_size=1, max_size=3)
        | st.text(_any_char, max_size=12)
        | st.integers().map(str)
    )
    def run(value):
        raw = quote_from_bytes(value.encode("utf-8", "surrogatepass"))
        _send(world, method, path, None, _credentials(world, path, b""), f"{name}={raw}")

    FIGURES["operations"] += 1
    run()
    assert not FAILURES, "\n".join(FAILURES[:10])


# As they travel in the URL: "²", "٣", an invalid UTF-8 byte, a lone surrogate (CESU-8), ...
@pytest.mark.parametrize(
    "value", ["%C2%B2", "%D9%A3", "%80", "%ED%B2%80", "true", "-1", "1e3", "9" * 40, "%201"]
)
def test_crafted_query_values_get_a_clear_400(world, value):
    for path, params in [
        ("/api/bots", ("limit", "offset")),
        ("/api/campaigns", ("limit", "offset", "bot_id")),
    ]:
        for name in params:
            headers = _credentials(world, path, b"")
            response = _send(world, "GET", path, None, headers, f"{name}={value}")
            assert response.status_code == 400, (path, name, value, response.status_code)


@pytest.mark.parametrize(
    "method, template, body",
    [
        ("POST", "/api/campaigns", {"bot_id": True, "name": "n", "text": "t"}),
        ("POST", "/api/pools", {"slug": "bool-id", "bots": [{"bot_id": True}]}),
        ("PATCH", "/api/bots/{bot_id}", {"funnel_id": True}),
        ("POST", "/webhook/telegram/{bot_id}", {"update_id": True}),
        ("POST", "/webhook/telegram/{bot_id}", {"update_id": 7, "message": {"chat": {"id": True}}}),
    ],
)
def test_true_is_not_an_id(world, method, template, body):
    path = _fill(world, template)
    raw = json.dumps(body).encode()
    response = _send(world, method, path, raw, _credentials(world, path, raw))
    assert response.status_code == 400, response.get_json()


def test_a_chunked_body_over_the_limit_is_refused_with_413_not_cut(world):
    """Gunicorn passes a chunked body without a length (wsgi.input_terminated): the limit must
    still refuse it whole, not hand the app its first mebibyte."""
    big = b'{"update_id": 1, "message": {"chat": {"id": 1}, "text": "' + b"a" * 2_000_000 + b'"}}'
    path = f"/webhook/telegram/{world['hook_bot_id']}"
    response = (
        world["app"]
        .test_client()
        .post(
            path,
            headers={HEADER: world["secret"], "Content-Type": "application/json"},
            environ_overrides={
                "wsgi.input": io.BytesIO(big),
                "wsgi.input_terminated": True,
                "HTTP_TRANSFER_ENCODING": "chunked",
            },
        )
    )
    assert response.status_code == 413 and response.is_json


def test_metrics_stay_readable_and_bounded_after_hostile_update_types(world):
    started = time.monotonic()
    path = f"/webhook/telegram/{world['hook_bot_id']}"
    for n, kind in enumerate(["brand_new", "other_new", "x" * 300, "emoji_\U0001f600"]):
        body = json.dumps({"update_id": 900 + n, kind: {}}).encode()
        assert _send(world, "POST", path, body, _credentials(world, path, body)).status_code == 200
    text = world["app"].test_client().get("/metrics").get_data(as_text=True)
    received = re.findall(r'grimbots_telegram_updates_received_total\{kind="([^"]*)"\}', text)
    assert "other" in received and "brand_new" not in received, received
    assert set(received) <= {*webhook.UPDATE_KINDS, "other"}
    assert time.monotonic() - started < 60


def test_every_route_the_app_serves_is_described(world):
    described = {
        (path, method.upper())
        for path, item in document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = set()
    for rule in world["app"].url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert served - described == set(), "routes missing from /openapi.json"
    assert described - served == set(), "/openapi.json describes routes the app does not serve"
