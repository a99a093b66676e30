"""Seller API tokens: issued once, stored only as a sha256 hash, checked on every /api call.

The token is 32 random bytes, so a plain sha256 (not a slow password hash) is enough: nobody can
brute-force 256 bits, and a fast hash keeps the per-request lookup cheap.
"""

from __future__ import annotations

import hashlib
import secrets

from flask import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from grimbots.db import get_db
from grimbots.models import Seller


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def create_seller(session: Session, name: str, email: str) -> tuple[Seller, str]:
    """A new seller and its bearer token (shown once: only the hash is stored)."""
    token = secrets.token_urlsafe(32)
    seller = Seller(name=name, email=email, api_token_hash=hash_token(token))
    session.add(seller)
    session.flush()
    return seller, token


def rotate_token(session: Session, seller: Seller) -> str:
    """Replace a seller's token (a leaked token stops working at once)."""
    token = secrets.token_urlsafe(32)
    seller.api_token_hash = hash_token(token)
    session.flush()
    return token


def bearer_token(req: Request) -> str | None:
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 200:
        return None
    return token


def seller_for_token(token: str) -> int | None:
    """The id of the seller owning this token, or None.

    Looked up by hash on the primary: a token created a moment ago must already work.
    """
    with get_db().session() as session:
        return session.execute(
            select(Seller.id).where(Seller.api_token_hash == hash_token(token))
        ).scalar_one_or_none()
