"""Webhook delivery as Telegram does it, for the fake Bot API (standard library only).

Telegram's rules that the fake keeps:
- setWebhook takes only an https URL on port 443, 80, 88 or 8443. Plain http is a test-only
  switch (`allow_http`), off by default, for labs that still serve the app without TLS.
- Each delivery verifies the webhook's certificate: its chain against the CA bundle the fake is
  configured with (the lab's ACME CA root, or the system's), and the host name; or, when the bot
  uploaded a certificate with setWebhook's `certificate` parameter, against that certificate
  alone (a self-signed one, the fallback for an operator without a domain).
- An update is delivered until the webhook answers 2xx, in order per bot, again after a pause
  that grows with each failure; every failed attempt sets the webhook's last error
  (getWebhookInfo's `last_error_date` / `last_error_message`), and the update stays pending.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

WEBHOOK_PORTS = (443, 80, 88, 8443)
MAX_CERTIFICATE = 64 * 1024


class WebhookRefused(ValueError):
    """setWebhook's arguments Telegram would refuse (the message is Telegram's description)."""


def check_url(url: str, allow_http: bool) -> None:
    """Refuse what Telegram refuses: a scheme other than https, a port outside its four."""
    parts = urlsplit(url)
    if parts.scheme == "http" and allow_http:
        return
    if parts.scheme != "https" or not parts.hostname:
        raise WebhookRefused("bad webhook: An HTTPS URL must be provided for webhook")
    try:
        port = parts.port or 443
    except ValueError:
        raise WebhookRefused("bad webhook: Failed to resolve host: invalid port") from None
    if port not in WEBHOOK_PORTS:
        raise WebhookRefused("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")


def check_certificate(data: bytes) -> str:
    """The uploaded certificate as PEM text; refused unless it is one PEM certificate."""
    if not data or len(data) > MAX_CERTIFICATE:
        raise WebhookRefused("bad webhook: Failed to set custom certificate file")
    text = data.decode("ascii", "replace")
    try:
        der = ssl.PEM_cert_to_DER_cert(text.strip())
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=der)
    except (ValueError, ssl.SSLError):
        raise WebhookRefused("bad webhook: Failed to set custom certificate file") from None
    return ssl.DER_cert_to_PEM_cert(der)


def client_context(ca_file: str | None, custom_pem: str | None) -> ssl.SSLContext:
    """What one delivery trusts: the uploaded certificate only, else the configured CA bundle
    (else the system's). Chain and host name are both verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname, CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if custom_pem:
        context.load_verify_locations(cadata=custom_pem)
    elif ca_file:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs()
    return context


class _Connection(http.client.HTTPSConnection):
    """HTTPS to the URL's host name (SNI, certificate check) over a TCP connection to
    `address`: what DNS or a port forward does, so tests can serve "port 443" unprivileged."""

    def __init__(self, host: str, port: int, address: tuple[str, int], **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._address = address
        self._tls = kwargs["context"]

    def connect(self) -> None:
        sock = socket.create_connection(self._address, self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def post_update(
    url: str,
    body: bytes,
    secret: str | None,
    context: ssl.SSLContext,
    timeout: float,
    connect_to: dict[str, str] | None = None,
) -> tuple[int, str]:
    """One delivery attempt: (HTTP status, "") or (0, Telegram-style error message).
    `connect_to` maps a URL's "host:port" to the "host:port" the TCP connection goes to."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (connect_to or {}).get(f"{parts.hostname}:{port}", f"{parts.hostname}:{port}")
    address = (target.rsplit(":", 1)[0], int(target.rsplit(":", 1)[1]))
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = _Connection(
            parts.hostname, port, address, timeout=timeout, context=context
        )
    else:
        conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if secret:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        status, reason = response.status, response.reason
    except ssl.SSLCertVerificationError as exc:
        return 0, f"SSL error {{certificate verify failed: {exc.verify_message}}}"
    except ssl.SSLError as exc:
        return 0, f"SSL error {{{exc.reason or exc}}}"
    except TimeoutError:
        return 0, "Read timeout expired"
    except ConnectionRefusedError:
        return 0, "Connection refused"
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"Connection error: {type(exc).__name__}"
    finally:
        conn.close()
    if 200 <= status < 300:
        return status, ""
    return status, f"Wrong response from the webhook: {status} {reason}"


class Deliveries:
    """The pending updates of every bot and the thread per bot that delivers them in order."""

    def __init__(
        self,
        hook_of: Callable[[str], dict[str, Any] | None],
        ca_file: str | None = None,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        timeout: float = 10.0,
        connect_to: dict[str, str] | None = None,
    ) -> None:
        self._hook_of = hook_of
        self.connect_to = dict(connect_to or {})
        self.ca_file = ca_file
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.timeout = timeout
        self._lock = threading.Condition()
        self._pending: dict[str, deque[dict[str, Any]]] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._attempts: list[dict[str, Any]] = []
        self._errors: dict[str, tuple[int, str]] = {}
        self._next_id: dict[str, int] = {}
        self._stopped = False

    def push(self, token: str, update: dict[str, Any]) -> int:
        """Queue an update for the bot's webhook (an update_id is given when it has none)."""
        update = dict(update)
        with self._lock:
            if "update_id" not in update:
                update["update_id"] = self._next_id.get(token, 100_000) + 1
            self._next_id[token] = max(self._next_id.get(token, 0), int(update["update_id"]))
            self._pending.setdefault(token, deque()).append(update)
            if token not in self._workers:
                worker = threading.Thread(
                    target=self._run, args=(token,), name=f"webhook-{token[:6]}", daemon=True
                )
                self._workers[token] = worker
                worker.start()
            self._lock.notify_all()
        return int(update["update_id"])

    def pending(self, token: str) -> int:
        with self._lock:
            return len(self._pending.get(token, ()))

    def last_error(self, token: str) -> tuple[int, str] | None:
        with self._lock:
            return self._errors.get(token)

    def attempts(self, token: str | None = None) -> list[dict[str, Any]]:
        """Every delivery attempt: token, update_id, attempt, status (0: none), ok, error."""
        with self._lock:
            return [dict(a) for a in self._attempts if token is None or a["token"] == token]

    def forget(self, token: str | None = None) -> None:
        """Drop pending updates (deleteWebhook with drop_pending_updates, or a reset)."""
        with self._lock:
            for key in [token] if token else list(self._pending):
                self._pending.pop(key, None)
                self._errors.pop(key, None)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()

    def _run(self, token: str) -> None:
        attempt, delay = 0, self.retry_delay
        while True:
            with self._lock:
                while not self._stopped and not self._pending.get(token):
                    self._lock.wait(0.5)
                if self._stopped:
                    return
                update = self._pending[token][0]
                hook = self._hook_of(token)
            if hook is None:  # no webhook: updates wait (getUpdates is not faked)
                time.sleep(0.1)
                continue
            attempt += 1
            body = json.dumps(update).encode()
            try:
                context = client_context(self.ca_file, hook.get("certificate"))
                secret = hook.get("secret_token")
                status, error = post_update(
                    hook["url"], body, secret, context, self.timeout, self.connect_to
                )
            except (OSError, ssl.SSLError) as exc:
                status, error = 0, f"Failed to load trusted certificates: {exc}"
            ok = not error
            with self._lock:
                self._attempts.append(
                    {
                        "token": token,
                        "update_id": update["update_id"],
                        "attempt": attempt,
                        "time": time.time(),
                        "status": status,
                        "ok": ok,
                        "error": error,
                    }
                )
                if ok:
                    queue = self._pending.get(token)
                    if queue and queue[0] is update:
                        queue.popleft()
                else:
                    self._errors[token] = (int(time.time()), error)
            if ok:
                attempt, delay = 0, self.retry_delay
            else:
                time.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
