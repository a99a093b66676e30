"""Which client address to believe: X-Forwarded-For only from configured reverse proxies.

Anyone can send an `X-Forwarded-For` header, so it is read only when the connection comes from
an address in `GRIMBOTS_TRUSTED_PROXIES` (HAProxy in phase 3; none by default). Like werkzeug's
ProxyFix, the middleware rewrites `REMOTE_ADDR` (keeping the original in
`werkzeug.proxy_fix.orig`), so `request.remote_addr` is the one address the app uses. Unlike
ProxyFix, which trusts a fixed number of hops, trust goes by address: the header is walked from
the right, past every trusted proxy, and the first address that is not one is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_address(remote: str, forwarded_for: str, trusted: Iterable[Network]) -> str:
    """The client's address given the connection's peer and its X-Forwarded-For header."""
    trusted = tuple(trusted)

    def is_trusted(addr) -> bool:
        return addr is not None and any(addr in net for net in trusted)

    if not trusted or not is_trusted(_address(remote or "")):
        return remote
    client = remote
    for hop in reversed(forwarded_for.split(",") if forwarded_for else []):
        addr = _address(hop)
        if addr is None:
            break  # garbage in the header: keep the last address a trusted proxy vouched for
        client = str(addr)
        if not is_trusted(addr):
            break
    return client


class TrustedProxies:
    """WSGI middleware: REMOTE_ADDR becomes the client address behind trusted proxies."""

    def __init__(self, app: Callable, trusted: Iterable[Network]):
        self.app = app
        self.trusted = tuple(trusted)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if self.trusted:
            remote = environ.get("REMOTE_ADDR", "")
            client = client_address(remote, environ.get("HTTP_X_FORWARDED_FOR", ""), self.trusted)
            if client != remote:
                environ["werkzeug.proxy_fix.orig"] = {"REMOTE_ADDR": remote}
                environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)
