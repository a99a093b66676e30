"""The payment gateway and the seller of a scenario run: signed confirmations repeated until
2xx, campaigns created and started through the API (a mixin of `driver.ScenarioRun`)."""

from __future__ import annotations

import time

from sqlalchemy import select

from faults.lane import GATEWAY_SECRET
from grimbots.models import Lead, Payment
from grimbots.payments import SandboxGateway


class SellerSide:
    """The gateway's and the seller's calls."""

    # -- the gateway and the seller ------------------------------------------------------------
    def _payable(self, lead: int) -> Payment | None:
        """The charge this lead's customer pays: a paid one (a repeat), else the newest, once
        its PIX code has reached the chat (a customer cannot pay a code they never got: a bot
        under a long 429 hold pays nothing until it sends). None: nothing to pay yet."""
        payments = self._charges(lead)
        if not payments:
            return None  # no charge yet (its job failed): the customer pays once the PIX arrives
        target = next((p for p in payments if p.status == "paid"), payments[0])
        if target.id in self.payment_posts or self._pix_reached(lead, target.pix_code):
            return target
        return None

    def _charges(self, lead: int) -> list[Payment]:
        """The lead's charges, newest first."""
        with self.hdb.session() as session:
            return list(
                session.scalars(
                    select(Payment)
                    .join(Lead, Lead.id == Payment.lead_id)
                    .where(
                        Lead.bot_id == self.bot(lead).bot_id,
                        Lead.telegram_user_id == self.chats[lead],
                    )
                    .order_by(Payment.id.desc())
                ).all()
            )

    def _pix_reached(self, lead: int, pix_code: str) -> bool:
        """Telegram delivered a message with this PIX code to the lead (the fake's record)."""
        for call in self.fake.sent(token=self.bot(lead).token, chat_id=self.chats[lead]):
            params = call.get("params") or {}
            if pix_code in str(params.get("text") or params.get("caption") or ""):
                return True
        return False

    def _pay(self, lead: int, twin: bool = False) -> None:
        target = self._payable(lead)
        if target is None:
            return
        if target.id not in self.payment_posts:
            self._open_post(target, lead)
        elif not twin and self.payment_posts[target.id]["ok"]:
            return
        self._post_payment(target.id)

    def _open_post(self, target, lead: int) -> None:
        """Start the record of the payment webhooks the customer's payment of ``target`` sends."""
        self.payment_posts[target.id] = {
            "txid": target.gateway_txid,
            "amount": target.amount_cents,
            "lead": lead,
            "answers": [],
            "ok": False,
        }

    def _post_payment(self, payment_id: int) -> None:
        post = self.payment_posts[payment_id]
        body, headers = SandboxGateway(GATEWAY_SECRET).event_body(
            post["txid"], "paid", post["amount"]
        )
        try:
            status = self.client.post(
                "/webhook/payment/sandbox", data=body, headers=headers
            ).status_code
        except Exception as exc:
            self.notes.append(f"payment webhook raised {type(exc).__name__}: {exc}")
            status = 500
        post["answers"].append(status)
        post["ok"] = post["ok"] or 200 <= status < 300
        chat = self.chats[post["lead"]]
        if payment_id not in self.payment_paid_at and self._is_paid(payment_id):
            self.payment_paid_at[payment_id] = time.time()
            self.paid_at.setdefault(chat, self.payment_paid_at[payment_id])

    def pay_unseen(self, lead: int) -> bool:
        """The customer pays the newest charge before its PIX code reached the chat (through the
        gateway's checkout page, say); True when it was still pending, unseen, and got paid."""
        target = next(iter(self._charges(lead)), None)
        if target is None or target.status != "pending" or target.id in self.payment_posts:
            return False
        if self._pix_reached(lead, target.pix_code):
            return False
        self._open_post(target, lead)
        self._post_payment(target.id)
        return target.id in self.payment_paid_at

    def _is_paid(self, payment_id: int) -> bool:
        with self.hdb.session() as session:
            payment = session.get(Payment, payment_id)
            return payment is not None and payment.status == "paid"

    def _campaign(self) -> None:
        campaign = {
            "text": f"Promocao {self.s.index}-{len(self.campaigns)}: so hoje!",
            "key": f"faults-{self.s.seed}-{self.s.index}-{len(self.campaigns)}",
            "id": None,
            "started": False,
            "done": False,
            "answers": [],
        }
        self.campaigns.append(campaign)
        self._campaign_step(campaign)

    def _campaign_step(self, campaign: dict) -> None:
        """The seller's next call: create (until 2xx), then start (until 2xx or 409)."""
        auth = {"Authorization": f"Bearer {self.api_token}"}
        try:
            if campaign["id"] is None:
                resp = self.client.post(
                    "/api/campaigns",
                    json={"bot_id": self.bot_id, "name": "promo", "text": campaign["text"]},
                    headers=auth | {"Idempotency-Key": campaign["key"]},
                )
                campaign["answers"].append(resp.status_code)
                if resp.status_code == 201:
                    campaign["id"] = resp.get_json()["id"]
                else:
                    return
            resp = self.client.post(f"/api/campaigns/{campaign['id']}/start", headers=auth)
            campaign["answers"].append(resp.status_code)
            if resp.status_code in (202, 409):
                campaign["done"] = True
        except Exception as exc:
            self.notes.append(f"campaign API raised {type(exc).__name__}: {exc}")
            campaign["answers"].append(500)
