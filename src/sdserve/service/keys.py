"""API keys in the job database: created once (only the hash is kept), listed, revoked,
checked in constant time, with an optional rate limit and image-credit quota per key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, func, insert, select, update

from ..errors import InsufficientCredits, NotFound
from .db import Database
from .tables import api_keys

__all__ = ["ApiKey", "KeyStore", "hash_key", "charge", "refund", "KEY_PREFIX"]

# Recognisable in logs and secret scanners; the random part carries 256 bits.
KEY_PREFIX = "sds_"


def hash_key(key: str) -> str:
    """sha256 is enough here: keys are 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key's record (never the key itself)."""

    id: str
    name: str | None
    prefix: str
    created_at: float
    revoked_at: float | None
    rate_limit: int | None
    credits: int | None
    credits_used: int

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def credits_left(self) -> int | None:
        return None if self.credits is None else max(0, self.credits - self.credits_used)


def _key(row) -> ApiKey:  # type: ignore[no-untyped-def]
    return ApiKey(id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at, revoked_at=row.revoked_at,
                  rate_limit=row.rate_limit, credits=row.credits, credits_used=row.credits_used)


class KeyStore:
    """The ``api_keys`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str | None = None, rate_limit: int | None = None,
               credits: int | None = None) -> tuple[ApiKey, str]:
        """A new key: its record and the key itself, which is shown once and not stored."""
        if rate_limit is not None and rate_limit < 1:
            raise ValueError("rate limit must be at least 1 request per minute")
        if credits is not None and credits < 0:
            raise ValueError("credits must be 0 or more")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(id="key_" + secrets.token_hex(6), name=name, prefix=key[:10], created_at=time.time(),
                        revoked_at=None, rate_limit=rate_limit, credits=credits, credits_used=0)
        with self.db.tx() as conn:
            conn.execute(insert(api_keys).values(hash=hash_key(key), **asdict(record)))
        return record, key

    def list(self) -> list[ApiKey]:
        with self.db.tx() as conn:
            return [_key(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.created_at))]

    def get(self, key_id: str) -> ApiKey | None:
        with self.db.tx() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return _key(row) if row else None

    def revoke(self, id_or_key: str) -> ApiKey:
        """Revoke by id (``key_...``) or by the key itself; NotFound if neither matches."""
        cond = api_keys.c.hash == hash_key(id_or_key) if id_or_key.startswith(KEY_PREFIX) \
            else api_keys.c.id == id_or_key
        with self.db.tx() as conn:
            conn.execute(update(api_keys).where(cond, api_keys.c.revoked_at.is_(None)).values(revoked_at=time.time()))
            row = conn.execute(select(api_keys).where(cond)).first()
        if row is None:
            raise NotFound(f"no API key {id_or_key}")
        return _key(row)

    def authenticate(self, key: str) -> ApiKey | None:
        """The active key's record, or None. The lookup is by hash, so response time says
        nothing about how much of a guess was right; the final compare is constant-time."""
        digest = hash_key(key)
        with self.db.tx() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.hash == digest,
                                                      api_keys.c.revoked_at.is_(None))).first()
        if row is None or not hmac.compare_digest(row.hash, digest):
            return None
        return _key(row)

    def any_active(self) -> bool:
        """Whether any key is live: with none (and no static keys) the server is open."""
        with self.db.tx() as conn:
            n = conn.execute(select(func.count()).select_from(api_keys)
                             .where(api_keys.c.revoked_at.is_(None))).scalar_one()
        return n > 0


def charge(conn: Connection, owner: str | None, images: int) -> int:
    """Take ``images`` credits from the owner's key inside the caller's transaction.

    Returns the credits taken (0 for owners without a quota). The UPDATE's condition makes
    the check and the debit one step, so concurrent requests cannot overdraw a key.
    """
    if owner is None:
        return 0
    row = conn.execute(select(api_keys.c.credits, api_keys.c.credits_used).where(api_keys.c.id == owner)).first()
    if row is None or row.credits is None:
        return 0
    done = conn.execute(update(api_keys)
                        .where(api_keys.c.id == owner, api_keys.c.credits - api_keys.c.credits_used >= images)
                        .values(credits_used=api_keys.c.credits_used + images)).rowcount
    if not done:
        left = max(0, row.credits - row.credits_used)
        raise InsufficientCredits(f"this API key has {left} image credit(s) left; the request needs {images}")
    return images


def refund(conn: Connection, owner: str | None, images: int) -> None:
    """Give back credits of a job that did not succeed (failed or canceled)."""
    if owner is None or images <= 0:
        return
    conn.execute(update(api_keys).where(api_keys.c.id == owner, api_keys.c.credits_used >= images)
                 .values(credits_used=api_keys.c.credits_used - images))
