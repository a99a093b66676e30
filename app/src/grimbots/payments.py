"""PIX charges through gateway adapters, and the gateway's confirmation webhook.

A gateway is an interface (create a charge, verify and parse its webhook) so a real provider can
be added next to the sandbox one without touching the funnel. The webhook is the money path:
unsigned requests never get in (the lesson: unauthenticated payment webhooks), and a payment
flips pending -> paid exactly once, however many times and however concurrently the gateway
repeats the event; only the request that flips it marks the lead paid and enqueues delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import requests
from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from grimbots import jsonbody, metrics
from grimbots.db import get_db
from grimbots.errors import error_response
from grimbots.models import Bot, Lead, Payment
from grimbots.openapi import Answer, describe
from grimbots.route_schemas import Error, PaymentResult
from grimbots.route_schemas import PaymentEvent as PaymentEventSchema
from grimbots.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_GATEWAY = "sandbox"
SIGNATURE_HEADER = "X-Signature"
# The job that sends the access link; a dotted path so this module does not import the jobs.
DELIVER_JOB = "grimbots.jobs.deliver_access"
# How long the "delivery being enqueued" marker lives: it only keeps concurrent confirmations
# from enqueueing together; after it, the delivery job's own state decides (a job that spent its
# retries in a long Telegram outage may be enqueued again).
_DELIVERY_MARK_TTL = 60


@dataclass(frozen=True)
class Charge:
    txid: str
    pix_code: str
    expires_at: datetime


@dataclass(frozen=True)
class PaymentEvent:
    txid: str
    status: str  # "paid" or "expired"
    amount_cents: int


class InvalidEvent(ValueError):
    """The webhook body is not a well-formed event of this gateway."""


class Gateway(Protocol):
    """What the app needs from a PIX provider."""

    name: str

    def create_charge(self, idempotency_key: str, amount_cents: int, description: str) -> Charge:
        """Create (or, for a key seen before, return again) one charge."""
        ...

    def verify(self, raw_body: bytes, headers: Mapping[str, str]) -> bool:
        """True only when the webhook was signed by this gateway."""
        ...

    def parse_event(self, raw_body: bytes) -> PaymentEvent:
        """The event in a verified body; raises InvalidEvent when malformed."""
        ...


# -- PIX "copia e cola" (EMV QR Code Payload, BR Code) ------------------------------------------


def crc16_ccitt(data: bytes) -> int:
    """CRC16/CCITT-FALSE (poly 0x1021, init 0xFFFF), the checksum the BR Code spec mandates."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _tlv(tag: str, value: str) -> str:
    if len(value) > 99:
        raise ValueError(f"EMV field {tag} is longer than 99 characters")
    return f"{tag}{len(value):02d}{value}"


def _emv_text(value: str, limit: int) -> str:
    """Merchant name/city: ASCII, no accents, bounded (BR Code restricts the character set)."""
    ascii_only = value.encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_only if ch.isalnum() or ch in " .-")[:limit] or "NA"


def pix_copia_e_cola(
    *, pix_key: str, amount_cents: int, txid: str, merchant_name: str, merchant_city: str
) -> str:
    """The EMV string a customer pastes in the bank app, ending with its CRC (field 63)."""
    if amount_cents <= 0:
        raise ValueError("amount_cents must be positive")
    merchant_account = _tlv("00", "br.gov.bcb.pix") + _tlv("01", pix_key)
    payload = (
        _tlv("00", "01")  # payload format indicator
        + _tlv("01", "12")  # point of initiation: dynamic, single use
        + _tlv("26", merchant_account)
        + _tlv("52", "0000")  # merchant category code
        + _tlv("53", "986")  # currency: BRL
        + _tlv("54", f"{amount_cents // 100}.{amount_cents % 100:02d}")
        + _tlv("58", "BR")
        + _tlv("59", _emv_text(merchant_name, 25))
        + _tlv("60", _emv_text(merchant_city, 15))
        + _tlv("62", _tlv("05", txid))
        + "6304"
    )
    return payload + f"{crc16_ccitt(payload.encode('ascii')):04X}"


def sign(secret: str, raw_body: bytes) -> str:
    """The X-Signature value for a body: sha256=<hex HMAC-SHA256 of the raw bytes>."""
    return "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()


class SandboxGateway:
    """A PIX provider stand-in that behaves like a real one.

    Charges are deduplicated on the idempotency key (the txid is derived from it), the code is a
    valid BR Code with a correct CRC, charges expire, and the confirmation webhook is signed with
    HMAC-SHA256 of the raw body.
    """

    name = "sandbox"
    expiry = timedelta(minutes=30)
    pix_key = "7d9f0335-8dcc-4054-9bf9-0dbd61d36906"  # a random-key (EVP) format PIX key
    merchant_name = "GRIMBOTS SANDBOX"
    merchant_city = "SAO PAULO"

    def __init__(self, secret: str = "") -> None:
        self._secret = secret

    @staticmethod
    def txid_for(idempotency_key: str) -> str:
        # BR Code txids are up to 25 alphanumerics.
        return "SBX" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:22].upper()

    def create_charge(self, idempotency_key: str, amount_cents: int, description: str) -> Charge:
        if not idempotency_key:
            raise ValueError("an idempotency key is required")
        txid = self.txid_for(idempotency_key)
        code = pix_copia_e_cola(
            pix_key=self.pix_key,
            amount_cents=amount_cents,
            txid=txid,
            merchant_name=self.merchant_name,
            merchant_city=self.merchant_city,
        )
        return Charge(txid=txid, pix_code=code, expires_at=datetime.now(UTC) + self.expiry)

    def verify(self, raw_body: bytes, headers: Mapping[str, str]) -> bool:
        if not self._secret:
            # No secret configured: nothing can be authenticated, so nothing is accepted.
            return False
        given = headers.get(SIGNATURE_HEADER) or ""
        expected = sign(self._secret, raw_body)
        return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))

    def parse_event(self, raw_body: bytes) -> PaymentEvent:
        try:
            # Through jsonbody: nesting past the recursion limit is bad input, not a 500.
            data = jsonbody.loads(raw_body)
        except jsonbody.BadJson as exc:
            raise InvalidEvent(str(exc)) from None
        if not isinstance(data, dict):
            raise InvalidEvent("body must be a JSON object")
        txid, status, amount = data.get("txid"), data.get("status"), data.get("amount_cents")
        if not isinstance(txid, str) or not 1 <= len(txid) <= 100 or not txid.isalnum():
            raise InvalidEvent("txid must be 1 to 100 letters and digits")
        if status not in ("paid", "expired"):
            raise InvalidEvent("status must be 'paid' or 'expired'")
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount < 2**31:
            raise InvalidEvent("amount_cents must be a positive integer")
        return PaymentEvent(txid=txid, status=status, amount_cents=amount)

    def event_body(self, txid: str, status: str, amount_cents: int) -> tuple[bytes, dict]:
        """What the provider would POST: the JSON body and its signature header."""
        body = json.dumps(
            {
                "event": f"charge.{status}",
                "txid": txid,
                "status": status,
                "amount_cents": amount_cents,
                "occurred_at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        headers = {SIGNATURE_HEADER: sign(self._secret, body), "Content-Type": "application/json"}
        return body, headers


GATEWAYS: dict[str, type[SandboxGateway]] = {"sandbox": SandboxGateway}


def _process_settings() -> Settings:
    # The settings the process was started with (the pools are built from them).
    from grimbots.redis_pool import get_pools

    return get_pools().settings


def get_gateway(name: str, settings: Settings | None = None) -> Gateway | None:
    """The adapter for a gateway name, or None when the name is unknown."""
    cls = GATEWAYS.get(name)
    if cls is None:
        return None
    settings = settings or _process_settings()
    return cls(settings.gateway_secrets.get(name, ""))


# -- creating a charge (called by the funnel in a worker) ----------------------------------------


def create_payment(
    session: Session,
    *,
    bot: Bot,
    lead: Lead,
    amount_cents: int,
    idempotency_key: str,
    offer_id: int | None,
    downsell_position: int | None = None,
    description: str = "",
    gateway_name: str = DEFAULT_GATEWAY,
) -> Payment:
    """Create the charge and its row; the same idempotency key always gives the same payment.

    The gateway dedupes on the key, and the insert is ON CONFLICT DO NOTHING on
    (gateway, gateway_txid), so a retried job or two concurrent workers end with one row.
    """
    if lead.bot_id != bot.id:
        raise ValueError("the lead does not belong to this bot")
    gateway = get_gateway(gateway_name)
    if gateway is None:
        raise ValueError(f"unknown payment gateway {gateway_name!r}")
    charge = gateway.create_charge(idempotency_key, amount_cents, description)
    values = {
        "seller_id": bot.seller_id,
        "bot_id": bot.id,
        "lead_id": lead.id,
        "offer_id": offer_id,
        "downsell_position": downsell_position,
        "gateway": gateway_name,
        "gateway_txid": charge.txid,
        "amount_cents": amount_cents,
        "status": "pending",
        "pix_code": charge.pix_code,
        "expires_at": charge.expires_at,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(Payment)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["gateway", "gateway_txid"])
    )
    payment = session.execute(
        select(Payment)
        .where(Payment.gateway == gateway_name, Payment.gateway_txid == charge.txid)
        .execution_options(populate_existing=True)
    ).scalar_one()
    if payment.lead_id != lead.id:
        # Same key reused for another lead: a caller bug, never hand one lead's charge to another.
        raise ValueError("idempotency key already used for another lead")
    return payment


def charge_pending(payment_id: int):
    """The outbox guard of a charge's PIX code: due only while the charge is pending.

    Read with a row lock inside the outbox's fence transaction, so the confirmation webhook's
    flip (an UPDATE of the same row) is ordered before or after the decision to send, never in
    between: a retried or delayed job never sends the code of a charge already paid or expired.
    """

    def pending(session: Session) -> bool:
        status = session.scalar(
            select(Payment.status).where(Payment.id == payment_id).with_for_update()
        )
        return status == "pending"

    return pending


# -- the sandbox provider's side (CLI `grimbots sandbox-pay`, tests) ------------------------------


def sandbox_event(
    settings: Settings, txid: str, status: str = "paid", amount_cents: int | None = None
) -> tuple[bytes, dict]:
    """The signed webhook the sandbox gateway sends for a charge (amount read from the DB)."""
    if amount_cents is None:
        with get_db(settings).read_session() as session:
            amount_cents = session.execute(
                select(Payment.amount_cents).where(
                    Payment.gateway == "sandbox", Payment.gateway_txid == txid
                )
            ).scalar_one_or_none()
        if amount_cents is None:
            raise LookupError(f"no sandbox charge with txid {txid}")
    gateway = SandboxGateway(settings.gateway_secrets.get("sandbox", ""))
    return gateway.event_body(txid, status, amount_cents)


def sandbox_pay(settings: Settings, txid: str, base_url: str) -> int:
    """Play the sandbox provider confirming a payment; returns the app's HTTP status."""
    body, headers = sandbox_event(settings, txid, "paid")
    response = requests.post(
        f"{base_url.rstrip('/')}/webhook/payment/sandbox", data=body, headers=headers, timeout=10
    )
    return response.status_code


# -- the confirmation webhook -------------------------------------------------------------------

bp = Blueprint("payments", __name__)


def _apply_event(session: Session, gateway: str, event: PaymentEvent) -> tuple[str, int | None]:
    """One transaction: (outcome, payment id). Outcomes: flipped, duplicate, unknown, mismatch."""
    payment = session.execute(
        select(Payment).where(Payment.gateway == gateway, Payment.gateway_txid == event.txid)
    ).scalar_one_or_none()
    if payment is None:
        return "unknown", None
    if payment.amount_cents != event.amount_cents:
        return "mismatch", payment.id
    now = datetime.now(UTC)
    if event.status == "paid":
        # The gateway's word on money wins over our expiry clock: a charge paid just after we
        # expired it is still a sale. Only the request whose UPDATE matches flips it.
        flip = (
            update(Payment)
            .where(
                Payment.id == payment.id,
                Payment.status.in_(("pending", "expired")),
            )
            .values(status="paid", paid_at=now)
        )
    else:
        flip = (
            update(Payment)
            .where(Payment.id == payment.id, Payment.status == "pending")
            .values(status="expired")
        )
    if session.execute(flip).rowcount != 1:
        return "duplicate", payment.id
    if event.status == "paid":
        session.execute(update(Lead).where(Lead.id == payment.lead_id).values(paid=True))
    return "flipped", payment.id


def _delivery_mark(payment_id: int) -> str:
    return f"gb:payment:{payment_id}:delivery_enqueued"


def delivery_job_id(payment_id: int) -> str:
    return f"deliver-{payment_id}"


def enqueue_delivery_once(payment_id: int) -> bool:
    """Enqueue the access delivery unless it is already on its way; True when this call did.

    The delivery job has a fixed id: while it is queued, scheduled or running nothing is added.
    Once it finished or spent its retries (a Telegram outage longer than the retry schedule),
    a repeated confirmation or the payments reconciler enqueues it again, and the outbox sends
    the link at most once. A short marker keeps concurrent confirmations from racing.
    """
    from grimbots import queues
    from grimbots.redis_pool import state

    mark = _delivery_mark(payment_id)
    client = state()
    if not client.set(mark, "1", nx=True, ex=_DELIVERY_MARK_TTL):
        return False
    try:
        return queues.enqueue_unique(
            queues.TASKS, delivery_job_id(payment_id), DELIVER_JOB, payment_id
        )
    except Exception:
        client.delete(mark)
        raise


def _undelivered(payment_id: int) -> bool:
    with get_db().session() as session:
        payment = session.get(Payment, payment_id)
        return payment is not None and payment.status == "paid" and payment.delivered_at is None


@bp.post("/webhook/payment/<gateway>")
@describe(
    "A payment gateway's confirmation (HMAC-SHA256 of the raw body in X-Signature)",
    tags=["payments"],
    security="gatewaySignature",
    body=PaymentEventSchema,
    responses={
        200: Answer("applied, or a duplicate", PaymentResult),
        400: Answer("not a payment event, or the amount does not match", Error),
        401: Answer("invalid signature", Error),
        404: Answer("unknown gateway or transaction", Error),
        413: Answer("body over 1 MiB", Error),
        503: Answer(
            "payment recorded but delivery not queued, or a dependency unavailable: retry", Error
        ),
    },
)
def payment_webhook(gateway: str):
    """Gateway confirmation: authenticate, then flip the payment once and enqueue delivery."""
    settings: Settings = current_app.config["GRIMBOTS_SETTINGS"]
    adapter = get_gateway(gateway, settings)
    if adapter is None:
        return error_response(404, "unknown payment gateway")
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 from Flask
    if not adapter.verify(raw, request.headers):
        log.warning("payment webhook with a bad or missing signature", extra={"gateway": gateway})
        return error_response(401, "invalid signature")
    try:
        event = adapter.parse_event(raw)
    except InvalidEvent as exc:
        return error_response(400, str(exc))
    outcome, payment_id = get_db().transaction(lambda s: _apply_event(s, gateway, event))
    if outcome == "unknown":
        return error_response(404, "unknown transaction")
    if outcome == "mismatch":
        log.error("payment webhook amount mismatch", extra={"payment_id": payment_id})
        return error_response(400, "amount does not match the charge")
    if outcome == "duplicate":
        metrics.DUPLICATES.labels("payment_webhook").inc()
        if event.status == "paid" and _undelivered(payment_id):
            # Covers a first request that flipped the payment but could not enqueue.
            try:
                enqueue_delivery_once(payment_id)
            except Exception:  # noqa: BLE001 - Redis away: the gateway retries, the reconciler too
                log.warning("payment %s paid; delivery not enqueued yet", payment_id)
                return error_response(503, "payment recorded; delivery not queued, retry")
        return jsonify({"ok": True, "duplicate": True})
    if event.status == "paid":
        try:
            enqueue_delivery_once(payment_id)
        except Exception:  # noqa: BLE001 - Redis away: the gateway retries, the reconciler too
            log.warning("payment %s paid; delivery not enqueued yet", payment_id)
            return error_response(503, "payment recorded; delivery not queued, retry")
    log.info("payment %s", event.status, extra={"payment_id": payment_id})
    return jsonify({"ok": True, "duplicate": False, "status": event.status})
