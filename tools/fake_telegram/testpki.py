"""Certificates and an HTTPS webhook for tests of webhook delivery (openssl CLI, stdlib).

Used by the fake's tests and the app's: a CA and a leaf it signs (as an ACME CA would issue),
a self-signed certificate (the operator's fallback), and a webhook receiver over TLS.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: S603,S607


def _san(names: list[str]) -> str:
    kinds = ["IP" if name.replace(".", "").isdigit() else "DNS" for name in names]
    return ",".join(f"{kind}:{name}" for kind, name in zip(kinds, names, strict=True))


def make_ca(folder: Path, name: str = "test-ca") -> tuple[Path, Path]:
    """A CA certificate and key: what clients trust (Pebble's root in the lab)."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def make_leaf(folder: Path, ca: tuple[Path, Path], names: list[str]) -> tuple[Path, Path]:
    """A server certificate for `names` signed by `ca`."""
    cert, key, csr = folder / "leaf.crt", folder / "leaf.key", folder / "leaf.csr"
    ext = folder / "leaf.ext"
    ext.write_text(f"subjectAltName={_san(names)}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={names[0]}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


def make_selfsigned(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate as Telegram's docs make one (openssl req -x509)."""
    cert, key = folder / "self.pem", folder / "self.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes", "-keyout", str(key),
        "-out", str(cert), "-days", "2", "-subj", f"/CN={names[0]}",
        "-addext", f"subjectAltName={_san(names)}",
    )  # fmt: skip
    return cert, key


class Webhook:
    """An HTTPS server that records each POST's JSON body and secret header, answering
    `status` (200 by default)."""

    def __init__(self, cert: Path, key: Path, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.secrets: list[str | None] = []
        self.status = status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.bodies.append(json.loads(body))
                hook.secrets.append(self.headers.get("X-Telegram-Bot-Api-Secret-Token"))
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
