"""API keys: one tenant each, with scopes, stored hashed in the platform's SQL store.

A key reads ``swk_<key id>_<secret>``: the key id (12 hex digits) finds the row, the secret
(256 random bits) is checked against ``sha256(key id + ":" + secret)`` with a timing-safe
comparison. The raw key is shown once, when it is created or rotated; the table keeps the id, a
display prefix (``swk_<key id>``), the hash, the tenant, the scopes, a name and the creation and
revocation times. Nothing here logs a key or a hash.

``KeyAuthenticator`` is what the service uses: it caches rows for ``ttl_s`` (a revoked key stops
working within that time, without a restart) and also accepts the platform's single shared key
(``SHELFWISE_API_KEY``) as a ``default``-tenant key with every scope.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Column, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Engine

from shelfwise.configs.tenants import DEFAULT_TENANT
from shelfwise.monitoring.store import UTCDateTime, tables_on, utc_now

logger = logging.getLogger(__name__)

Scope = Literal["predict", "feedback", "admin"]
SCOPES: tuple[Scope, ...] = ("predict", "feedback", "admin")
KEY_PREFIX = "swk_"
LEGACY_KEY_ID = "legacy"  # the shared SHELFWISE_API_KEY, as a principal
_KEY_RE = re.compile(r"^swk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
_DUMMY_HASH = hashlib.sha256(b"shelfwise:no-such-key").hexdigest()

key_metadata = MetaData()
api_keys_table = Table(
    "api_keys",
    key_metadata,
    Column("key_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("scopes", String(100), nullable=False),  # comma-separated, sorted
    Column("name", String(200), nullable=True),
    Column("prefix", String(32), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("rotated_from", String(32), nullable=True),
)


class UnknownKeyError(LookupError):
    """No key with that id."""


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    tenant: str
    scopes: tuple[str, ...]
    prefix: str
    key_hash: str
    created_at: datetime
    name: str | None = None
    revoked_at: datetime | None = None
    rotated_from: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        """What ``keys list`` shows: never the hash, never the key."""
        return {
            "key_id": self.key_id,
            "prefix": self.prefix,
            "tenant": self.tenant,
            "scopes": list(self.scopes),
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "rotated_from": self.rotated_from,
        }


@dataclass(frozen=True)
class Principal:
    """Who a request is: a tenant, its key's scopes and the key id (the rate limit's bucket)."""

    tenant: str
    scopes: frozenset[str]
    key_id: str

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def normalise_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}, got {list(scopes)}")
    return tuple(s for s in SCOPES if s in set(scopes))


def key_hash(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """``(key_id, secret, raw key)`` of a fresh key."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return key_id, secret, f"{KEY_PREFIX}{key_id}_{secret}"


def parse_key(raw: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    match = _KEY_RE.match(raw)
    return (match.group(1), match.group(2)) if match else None


def matches(record: KeyRecord | None, secret: str) -> bool:
    """Timing-safe: the digest comparison runs whether or not the key id was found."""
    expected = record.key_hash if record is not None else _DUMMY_HASH
    key_id = record.key_id if record is not None else "0" * 12
    ok = hmac.compare_digest(key_hash(key_id, secret).encode(), expected.encode())
    return ok and record is not None


class KeyStore:
    """The ``api_keys`` table (created on first use) in the platform's SQL store."""

    def __init__(self, url: str | None = None, engine: Engine | None = None) -> None:
        if engine is None and url is None:
            raise ValueError("give a store URL or an engine")
        self.engine = tables_on(engine if engine is not None else str(url), key_metadata, "API key")
        self._own_engine = engine is None

    def dispose(self) -> None:
        if self._own_engine:
            self.engine.dispose()

    def create(
        self,
        tenant: str,
        scopes: list[str] | tuple[str, ...],
        name: str | None = None,
        rotated_from: str | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key; returns its record and the raw key (the only time it is known)."""
        scopes = normalise_scopes(scopes)
        key_id, secret, raw = new_key()
        row = {
            "key_id": key_id,
            "tenant": tenant,
            "scopes": ",".join(scopes),
            "name": name,
            "prefix": f"{KEY_PREFIX}{key_id}",
            "key_hash": key_hash(key_id, secret),
            "created_at": utc_now(),
            "revoked_at": None,
            "rotated_from": rotated_from,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(api_keys_table).values(**row))
        logger.info("API key %s created for tenant %s (%s)", row["prefix"], tenant, row["scopes"])
        return _record(row), raw

    def get(self, key_id: str) -> KeyRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys_table).where(api_keys_table.c.key_id == key_id)
            ).first()
        return _record(row._mapping) if row is not None else None

    def list(self, tenant: str | None = None, include_revoked: bool = True) -> list[KeyRecord]:
        query = select(api_keys_table).order_by(api_keys_table.c.created_at)
        if tenant is not None:
            query = query.where(api_keys_table.c.tenant == tenant)
        if not include_revoked:
            query = query.where(api_keys_table.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_record(r._mapping) for r in conn.execute(query)]

    def revoke(self, key_id: str, tenant: str | None = None) -> KeyRecord:
        """Revoke a key (idempotent: an already revoked key keeps its revocation time).
        ``tenant`` given: a key of another tenant is unknown (UnknownKeyError)."""
        record = self.get(key_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            raise UnknownKeyError(f"no API key {key_id!r}")
        if record.revoked_at is None:
            with self.engine.begin() as conn:
                conn.execute(
                    update(api_keys_table)
                    .where(api_keys_table.c.key_id == key_id, api_keys_table.c.revoked_at.is_(None))
                    .values(revoked_at=utc_now())
                )
            logger.info("API key %s revoked", record.prefix)
        revoked = self.get(key_id)
        assert revoked is not None
        return revoked

    def rotate(self, key_id: str, tenant: str | None = None) -> tuple[KeyRecord, str]:
        """A new key with the same tenant, scopes and name; the old one is revoked."""
        old = self.get(key_id)
        if old is None or not old.active or (tenant is not None and old.tenant != tenant):
            raise UnknownKeyError(f"no active API key {key_id!r}")
        new, raw = self.create(old.tenant, old.scopes, old.name, rotated_from=old.key_id)
        self.revoke(key_id)
        return new, raw


def _record(row: object) -> KeyRecord:
    m = dict(row)  # type: ignore[call-overload]
    return KeyRecord(
        key_id=m["key_id"],
        tenant=m["tenant"],
        scopes=tuple(s for s in str(m["scopes"]).split(",") if s),
        prefix=m["prefix"],
        key_hash=m["key_hash"],
        created_at=m["created_at"],
        name=m["name"],
        revoked_at=m["revoked_at"],
        rotated_from=m["rotated_from"],
    )


class KeyAuthenticator:
    """Raw key -> Principal (None: not a valid key). Rows are cached ``ttl_s`` seconds (0: read
    on every request), so revocation takes effect within ``ttl_s`` without a restart."""

    MAX_CACHED = 10_000

    def __init__(
        self,
        store: KeyStore | None,
        legacy_key: str | None = None,
        ttl_s: float = 2.0,
        clock: object = time.monotonic,
    ) -> None:
        self.store = store
        self.legacy_key = legacy_key or None
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._lock = threading.Lock()

    def cached(self, raw: str) -> bool:
        """True when authenticating ``raw`` needs no database read now."""
        parsed = parse_key(raw)
        if parsed is None or self.store is None or self.ttl_s <= 0:
            return parsed is None or self.store is None
        hit = self._cache.get(parsed[0])
        return hit is not None and self._clock() - hit[0] < self.ttl_s  # type: ignore[operator]

    def authenticate(self, raw: str) -> Principal | None:
        if self.legacy_key is not None and hmac.compare_digest(
            raw.encode(), self.legacy_key.encode()
        ):
            return Principal(DEFAULT_TENANT, frozenset(SCOPES), LEGACY_KEY_ID)
        parsed = parse_key(raw)
        if parsed is None or self.store is None:
            return None
        key_id, secret = parsed
        record = self._row(key_id)
        if not matches(record, secret) or record is None or not record.active:
            return None
        return Principal(record.tenant, frozenset(record.scopes), record.key_id)

    def _row(self, key_id: str) -> KeyRecord | None:
        now = self._clock()  # type: ignore[operator]
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        assert self.store is not None
        record = self.store.get(key_id)
        if self.ttl_s > 0:
            with self._lock:
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
                self._cache[key_id] = (now, record)
        return record
