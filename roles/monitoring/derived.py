"""The monitoring role's derived values: the web configurations' bcrypt hashes."""

from __future__ import annotations

import base64
import hashlib

# bcrypt's cost for the web configurations' basic auth: Prometheus and Alertmanager check it on
# every request (exporter-toolkit caches the result), so keep it modest.
BCRYPT_COST = 10
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BCRYPT64 = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def bcrypt_hash(password: str, seed: str) -> str:
    """The bcrypt hash of ``password`` for a web configuration's ``basic_auth_users``.

    The salt comes from the password and ``seed`` (e.g. the host's name) instead of the random
    generator, so the same inputs give the same file and a second deploy changes nothing.
    """
    import bcrypt

    digest = hashlib.sha256(f"{seed}\0{password}".encode()).digest()[:16]
    salt = base64.b64encode(digest)[:22].translate(bytes.maketrans(_B64, _BCRYPT64))
    prefix = f"$2b${BCRYPT_COST:02d}$".encode()
    return bcrypt.hashpw(password.encode(), prefix + salt).decode()


# The Jinja filters this role's templates and tasks use (the platform role's filter plugin
# collects every role's FILTERS; pyinfra renders with the same plugin).
FILTERS = {
    "grimbots_bcrypt": bcrypt_hash,
}
