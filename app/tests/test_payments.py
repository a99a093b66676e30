"""PIX charges and the payment webhook: signatures, idempotency, exactly one paid transition."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import func, select

from grimbots import payments, queues
from grimbots.models import Lead, Payment
from grimbots.payments import SandboxGateway, crc16_ccitt, create_payment, sandbox_event, sign
from tests.conftest import GATEWAY_SECRET
from tests.factories import make_bot, make_funnel, make_seller

URL = "/webhook/payment/sandbox"
BCB_EXAMPLE = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-426655440000"
    "5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***6304"
)


def parse_tlv(text: str) -> dict[str, str]:
    fields, i = {}, 0
    while i < len(text):
        tag, size = text[i : i + 2], int(text[i + 2 : i + 4])
        fields[tag] = text[i + 4 : i + 4 + size]
        i += 4 + size
    return fields


@pytest.fixture
def sale(db):
    """A seller, a bot with a funnel, a lead and a pending 19.90 charge."""
    with db.session() as session:
        seller, _ = make_seller(session)
        funnel = make_funnel(session, seller)
        bot = make_bot(session, seller, funnel)
        lead = Lead(bot_id=bot.id, telegram_user_id=777001, chat_id=777001)
        session.add(lead)
        session.flush()
        payment = create_payment(
            session,
            bot=bot,
            lead=lead,
            amount_cents=1990,
            idempotency_key="test:sale:1",
            offer_id=funnel.offers[0].id,
        )
    return {"bot": bot, "lead": lead, "payment": payment, "funnel": funnel}


def post_event(client, settings, txid, status="paid", amount_cents=None, headers=None):
    body, signed = sandbox_event(settings, txid, status, amount_cents)
    return client.post(URL, data=body, headers=headers if headers is not None else signed)


def payment_row(db, payment_id) -> Payment:
    with db.session() as session:
        return session.get(Payment, payment_id)


def tasks_depth() -> int:
    return queues.get_queue(queues.TASKS).count


# -- the PIX code ------------------------------------------------------------------------------


def test_crc16_matches_the_ccitt_false_check_value():
    assert crc16_ccitt(b"123456789") == 0x29B1


def test_crc16_reproduces_the_central_bank_manual_example():
    assert f"{crc16_ccitt(BCB_EXAMPLE.encode()):04X}" == "1D3D"


def test_pix_code_is_a_well_formed_br_code_with_a_valid_crc():
    charge = SandboxGateway("s").create_charge("key-1", 12345, "Curso")
    code = charge.pix_code
    fields = parse_tlv(code)
    assert fields["00"] == "01"
    assert parse_tlv(fields["26"])["00"] == "br.gov.bcb.pix"
    assert fields["53"] == "986" and fields["58"] == "BR"
    assert fields["54"] == "123.45"
    assert fields["59"] and len(fields["59"]) <= 25 and len(fields["60"]) <= 15
    assert parse_tlv(fields["62"])["05"] == charge.txid
    assert code[-8:-4] == "6304"
    assert code[-4:] == f"{crc16_ccitt(code[:-4].encode()):04X}"


def test_amounts_under_one_real_keep_two_decimals():
    fields = parse_tlv(SandboxGateway("s").create_charge("k", 7, "x").pix_code)
    assert fields["54"] == "0.07"


def test_sandbox_txid_is_derived_from_the_idempotency_key():
    gateway = SandboxGateway("s")
    first, again = gateway.create_charge("k-1", 100, ""), gateway.create_charge("k-1", 100, "")
    other = gateway.create_charge("k-2", 100, "")
    assert first.txid == again.txid != other.txid
    assert first.txid.isalnum() and len(first.txid) <= 25


def test_unknown_gateway_name_has_no_adapter(settings):
    assert payments.get_gateway("nope", settings) is None


# -- creating payments ---------------------------------------------------------------------------


def test_payment_is_created_pending_with_code_and_expiry(sale):
    payment = sale["payment"]
    assert payment.status == "pending"
    assert payment.gateway == "sandbox" and payment.amount_cents == 1990
    assert payment.pix_code.startswith("000201") and payment.expires_at is not None
    assert payment.seller_id == sale["bot"].seller_id


def test_same_idempotency_key_returns_the_same_payment(db, sale):
    with db.session() as session:
        again = create_payment(
            session,
            bot=sale["bot"],
            lead=sale["lead"],
            amount_cents=1990,
            idempotency_key="test:sale:1",
            offer_id=None,
        )
        count = session.scalar(select(func.count()).select_from(Payment))
    assert again.id == sale["payment"].id
    assert count == 1


def test_concurrent_charges_with_one_key_create_one_payment(db, sale):
    ids, errors = [], []

    def charge():
        try:
            with db.session() as session:
                ids.append(
                    create_payment(
                        session,
                        bot=sale["bot"],
                        lead=sale["lead"],
                        amount_cents=4700,
                        idempotency_key="test:race",
                        offer_id=None,
                    ).id
                )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=charge) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1 and len(ids) == 6
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 2


def test_a_key_reused_for_another_lead_is_refused(db, sale):
    with db.session() as session:
        other = Lead(bot_id=sale["bot"].id, telegram_user_id=5, chat_id=5)
        session.add(other)
        session.flush()
        with pytest.raises(ValueError):
            create_payment(
                session,
                bot=sale["bot"],
                lead=other,
                amount_cents=1990,
                idempotency_key="test:sale:1",
                offer_id=None,
            )


# -- the webhook: authentication and validation --------------------------------------------------


def test_payment_webhook_with_valid_signature_marks_paid_and_enqueues_delivery(
    client, settings, db, sale
):
    resp = post_event(client, settings, sale["payment"].gateway_txid)
    assert resp.status_code == 200
    assert resp.json == {"ok": True, "duplicate": False, "status": "paid"}
    row = payment_row(db, sale["payment"].id)
    assert row.status == "paid" and row.paid_at is not None
    with db.session() as session:
        assert session.get(Lead, sale["lead"].id).paid is True
    assert tasks_depth() == 1


def test_payment_webhook_with_bad_signature_is_rejected(client, settings, db, sale):
    body, _ = sandbox_event(settings, sale["payment"].gateway_txid)
    resp = client.post(URL, data=body, headers={"X-Signature": sign("wrong-secret", body)})
    assert resp.status_code == 401 and resp.json["ok"] is False
    assert payment_row(db, sale["payment"].id).status == "pending"
    assert tasks_depth() == 0


def test_payment_webhook_without_signature_is_rejected(client, settings, db, sale):
    body, _ = sandbox_event(settings, sale["payment"].gateway_txid)
    resp = client.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 401
    assert payment_row(db, sale["payment"].id).status == "pending"


def test_signature_of_another_body_is_rejected(client, settings, sale):
    body, headers = sandbox_event(settings, sale["payment"].gateway_txid)
    tampered = body.replace(b'"paid"', b'"paid" ')
    assert client.post(URL, data=tampered, headers=headers).status_code == 401


def test_non_ascii_signature_header_is_rejected_not_a_500(client, settings, sale):
    body, _ = sandbox_event(settings, sale["payment"].gateway_txid)
    resp = client.post(URL, data=body, headers={"X-Signature": "sha256=é"})
    assert resp.status_code == 401


def test_gateway_without_a_configured_secret_accepts_nothing(settings, sale):
    gateway = SandboxGateway("")
    body, _ = sandbox_event(settings, sale["payment"].gateway_txid)
    assert gateway.verify(body, {"X-Signature": sign("", body)}) is False


def test_unknown_gateway_is_not_found(client, settings, sale):
    body, headers = sandbox_event(settings, sale["payment"].gateway_txid)
    resp = client.post("/webhook/payment/paypix", data=body, headers=headers)
    assert resp.status_code == 404 and resp.json["ok"] is False


def test_unknown_transaction_is_not_found(client, settings, sale):
    resp = post_event(client, settings, "SBXDOESNOTEXIST", amount_cents=1990)
    assert resp.status_code == 404


def test_amount_mismatch_is_rejected_and_payment_stays_pending(client, settings, db, sale):
    resp = post_event(client, settings, sale["payment"].gateway_txid, amount_cents=1)
    assert resp.status_code == 400
    assert payment_row(db, sale["payment"].id).status == "pending"
    assert tasks_depth() == 0


MALFORMED_EVENTS = [
    b"not json",
    b"[1, 2]",
    b'{"txid": "ABC", "status": "paid"}',
    b'{"txid": "ABC", "status": "refunded", "amount_cents": 1990}',
    b'{"txid": "ABC", "status": "paid", "amount_cents": "1990"}',
    b'{"txid": "ABC", "status": "paid", "amount_cents": true}',
    b'{"txid": "ABC", "status": "paid", "amount_cents": -5}',
    b'{"txid": "", "status": "paid", "amount_cents": 1990}',
    b'{"txid": "A\\u0000B", "status": "paid", "amount_cents": 1990}',
    b'{"txid": 12, "status": "paid", "amount_cents": 1990}',
    b"\xff\xfe",
]


def test_signed_but_malformed_event_is_a_bad_request(client, settings):
    for body in MALFORMED_EVENTS:
        resp = client.post(URL, data=body, headers={"X-Signature": sign(GATEWAY_SECRET, body)})
        assert resp.status_code == 400 and resp.json["ok"] is False, body


def test_signed_body_nested_one_hundred_thousand_deep_is_a_bad_request_not_a_500(client, settings):
    body = b"[" * 100_000
    resp = client.post(URL, data=body, headers={"X-Signature": sign(GATEWAY_SECRET, body)})
    assert resp.status_code == 400 and resp.is_json
    assert resp.json["ok"] is False and "nested" in resp.json["error"]


def test_body_over_one_mebibyte_is_too_large(client, settings):
    body = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    resp = client.post(URL, data=body, headers={"X-Signature": sign(GATEWAY_SECRET, body)})
    assert resp.status_code == 413 and resp.json["ok"] is False


# -- idempotency ---------------------------------------------------------------------------------


def test_same_paid_event_twice_flips_once_and_enqueues_one_delivery(client, settings, db, sale):
    first = post_event(client, settings, sale["payment"].gateway_txid)
    second = post_event(client, settings, sale["payment"].gateway_txid)
    assert first.json["duplicate"] is False
    assert second.status_code == 200 and second.json == {"ok": True, "duplicate": True}
    assert tasks_depth() == 1


def test_concurrent_deliveries_of_one_event_flip_exactly_once(app, settings, db, sale):
    body, headers = sandbox_event(settings, sale["payment"].gateway_txid)
    answers, barrier = [], threading.Barrier(8)

    def deliver():
        client = app.test_client()
        barrier.wait()
        resp = client.post(URL, data=body, headers=headers)
        answers.append((resp.status_code, resp.json.get("duplicate")))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _ in answers] == [200] * 8
    assert sorted(dup for _, dup in answers) == [False] + [True] * 7
    assert tasks_depth() == 1
    assert payment_row(db, sale["payment"].id).status == "paid"


def test_paid_event_delivers_the_access_link_once(client, settings, sale, drain, fake_tg, db):
    for _ in range(3):
        post_event(client, settings, sale["payment"].gateway_txid)
    drain()
    deliveries = [
        call
        for call in fake_tg.sent(method="sendMessage", chat_id=777001)
        if sale["funnel"].access_link in (call["text"] or "")
    ]
    assert len(deliveries) == 1
    assert payment_row(db, sale["payment"].id).delivered_at is not None


def test_delivery_lost_to_a_queue_outage_is_enqueued_by_the_gateways_retry(
    client, settings, db, sale, monkeypatch
):
    real_enqueue = queues.enqueue

    def broken(*args, **kwargs):
        raise ConnectionError("queue Redis down")

    monkeypatch.setattr(queues, "enqueue", broken)
    first = post_event(client, settings, sale["payment"].gateway_txid)
    assert first.status_code == 503
    assert payment_row(db, sale["payment"].id).status == "paid"
    monkeypatch.setattr(queues, "enqueue", real_enqueue)
    retry = post_event(client, settings, sale["payment"].gateway_txid)
    assert retry.status_code == 200 and retry.json["duplicate"] is True
    assert tasks_depth() == 1
    post_event(client, settings, sale["payment"].gateway_txid)
    assert tasks_depth() == 1


def test_expired_event_expires_a_pending_payment_once(client, settings, db, sale):
    first = post_event(client, settings, sale["payment"].gateway_txid, "expired")
    again = post_event(client, settings, sale["payment"].gateway_txid, "expired")
    assert first.json == {"ok": True, "duplicate": False, "status": "expired"}
    assert again.json["duplicate"] is True
    assert payment_row(db, sale["payment"].id).status == "expired"
    assert tasks_depth() == 0


def test_payment_confirmed_after_expiry_still_counts_as_a_sale(client, settings, db, sale):
    post_event(client, settings, sale["payment"].gateway_txid, "expired")
    resp = post_event(client, settings, sale["payment"].gateway_txid, "paid")
    assert resp.json["duplicate"] is False
    assert payment_row(db, sale["payment"].id).status == "paid"
    assert tasks_depth() == 1


def test_expired_event_after_payment_changes_nothing(client, settings, db, sale):
    post_event(client, settings, sale["payment"].gateway_txid, "paid")
    resp = post_event(client, settings, sale["payment"].gateway_txid, "expired")
    assert resp.json["duplicate"] is True
    assert payment_row(db, sale["payment"].id).status == "paid"


def test_paying_one_charge_marks_only_its_lead_paid(client, settings, db, sale):
    with db.session() as session:
        other = Lead(bot_id=sale["bot"].id, telegram_user_id=9, chat_id=9)
        session.add(other)
        session.flush()
        other_id = other.id
    post_event(client, settings, sale["payment"].gateway_txid)
    with db.session() as session:
        assert session.get(Lead, other_id).paid is False


def test_duplicates_are_counted_in_metrics(client, settings, sale):
    from grimbots import metrics

    counter = metrics.DUPLICATES.labels("payment_webhook")
    before = counter._value.get()
    post_event(client, settings, sale["payment"].gateway_txid)
    post_event(client, settings, sale["payment"].gateway_txid)
    assert counter._value.get() == before + 1


def test_sandbox_pay_posts_a_signed_event_over_http(app, settings, db, sale):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status = payments.sandbox_pay(
            settings, sale["payment"].gateway_txid, f"http://127.0.0.1:{server.server_port}"
        )
    finally:
        server.shutdown()
    assert status == 200
    assert payment_row(db, sale["payment"].id).status == "paid"


def test_sandbox_event_is_signed_with_the_configured_secret(settings, sale):
    body, headers = sandbox_event(settings, sale["payment"].gateway_txid)
    assert headers["X-Signature"] == sign(GATEWAY_SECRET, body)
    assert json.loads(body)["amount_cents"] == 1990
