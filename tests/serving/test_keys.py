"""serving/keys.py and the auth middleware's pieces: keys stored hashed (the raw key is nowhere
in the database), parsing, timing-safe matching, revocation through the TTL cache, the shared
key as the default tenant, and the token bucket (a fake clock: no wall-clock limits)."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from sqlalchemy import select

from shelfwise.serving import keys as keys_mod
from shelfwise.serving.auth import RateLimiter, RoutePolicy, route_policies
from shelfwise.serving.keys import (
    LEGACY_KEY_ID,
    SCOPES,
    KeyAuthenticator,
    KeyStore,
    UnknownKeyError,
    api_keys_table,
    parse_key,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    s = KeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    yield s
    s.dispose()


def test_the_raw_key_is_not_in_the_database(store: KeyStore, tmp_path: Path) -> None:
    record, raw = store.create("bakery", ["predict", "feedback"], "ops")
    key_id, secret = parse_key(raw)
    assert record.key_id == key_id and record.prefix == f"swk_{key_id}"
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(api_keys_table))]
    text = repr(rows)
    assert secret not in text and raw not in text
    assert rows[0]["key_hash"] == keys_mod.key_hash(key_id, secret)
    store.dispose()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))
    assert secret.encode() not in blob and record.key_hash.encode() in blob
    assert "key_hash" not in record.public() and raw not in repr(record.public())


def test_scopes_are_validated_and_sorted(store: KeyStore) -> None:
    record, _ = store.create("a", ["admin", "predict"])
    assert record.scopes == ("predict", "admin")
    with pytest.raises(ValueError, match="scopes"):
        store.create("a", ["root"])
    with pytest.raises(ValueError, match="scopes"):
        store.create("a", [])


@pytest.mark.parametrize(
    "raw",
    ["", "swk_", "swk_XYZ_abc", "swk_0123456789ab", "sk_0123456789ab_" + "a" * 43, "x" * 500],
)
def test_malformed_keys_do_not_parse(raw: str) -> None:
    assert parse_key(raw) is None


def test_matching_is_timing_safe_and_exact(monkeypatch, store: KeyStore) -> None:
    record, raw = store.create("a", ["predict"])
    _, secret = parse_key(raw)
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(keys_mod.hmac, "compare_digest", spy)
    assert keys_mod.matches(record, secret)
    assert not keys_mod.matches(record, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not keys_mod.matches(None, secret)  # unknown id: the comparison still runs
    assert len(calls) == 3


def test_authenticate_revoke_rotate_through_the_cache(store: KeyStore) -> None:
    clock = FakeClock()
    auth = KeyAuthenticator(store, legacy_key=None, ttl_s=2.0, clock=clock)
    record, raw = store.create("bakery", ["predict"])
    principal = auth.authenticate(raw)
    assert principal is not None and principal.tenant == "bakery"
    assert principal.can("predict") and not principal.can("feedback")
    assert auth.cached(raw)
    store.revoke(record.key_id)
    assert auth.authenticate(raw) is not None  # within the TTL the cached row still answers
    clock.now += 2.5
    assert not auth.cached(raw)
    assert auth.authenticate(raw) is None  # revoked, no restart
    new, new_raw = store.rotate(store.create("bakery", ["feedback"], "n")[0].key_id)
    assert new.rotated_from is not None and new.scopes == ("feedback",) and new.name == "n"
    assert auth.authenticate(new_raw).tenant == "bakery"
    assert not store.get(new.rotated_from).active
    with pytest.raises(UnknownKeyError):
        store.rotate(new.rotated_from)  # a revoked key cannot be rotated
    with pytest.raises(UnknownKeyError):
        store.revoke(new.key_id, tenant="grocer")  # another tenant's key is unknown
    with pytest.raises(UnknownKeyError):
        store.revoke("nope")
    assert store.get(new.key_id).active


def test_the_shared_key_is_the_default_tenant_with_every_scope(store: KeyStore) -> None:
    auth = KeyAuthenticator(store, legacy_key="shared-secret", ttl_s=0)
    principal = auth.authenticate("shared-secret")
    assert principal.tenant == "default" and principal.key_id == LEGACY_KEY_ID
    assert principal.scopes == frozenset(SCOPES)
    assert auth.authenticate("shared-secreT") is None
    assert KeyAuthenticator(None, legacy_key=None).authenticate("shared-secret") is None


def test_list_by_tenant_and_active(store: KeyStore) -> None:
    a, _ = store.create("a", ["predict"])
    b, _ = store.create("b", ["predict"])
    store.revoke(a.key_id)
    assert [r.key_id for r in store.list("a")] == [a.key_id]
    assert [r.key_id for r in store.list(include_revoked=False)] == [b.key_id]


def test_token_bucket_per_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.wait_s("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.wait_s("k")
    assert wait == pytest.approx(0.5)
    assert limiter.wait_s("other") == 0.0  # another key is not affected
    clock.now += 0.5
    assert limiter.wait_s("k") == 0.0
    assert limiter.wait_s("k") > 0
    clock.now += 100
    assert [limiter.wait_s("k") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped at burst
    assert RateLimiter(rate=0, burst=1, clock=clock).wait_s("k") == 0.0  # off


def test_route_policies() -> None:
    policies = route_policies(
        {"/v1/a/predict": "a", "/v1/b/predict": "b", "/v1/c/predict": "c"},
        {"a": "default", "b": "bakery"},
        {"/v1/feedback": "feedback"},
        ["/v1/versions"],
        protect_predictions=False,
    )
    assert policies["/v1/a/predict"] == RoutePolicy("predict", "default", anonymous=True)
    assert policies["/v1/b/predict"] == RoutePolicy("predict", "bakery", anonymous=False)
    assert policies["/v1/c/predict"].owner == ""  # owned by nobody: 404 for every key
    assert policies["/v1/feedback"] == RoutePolicy("feedback")
    assert policies["/v1/versions"].anonymous and policies["/v1/versions"].scope is None
    protected = route_policies(
        {"/v1/a/predict": "a"},
        {"a": "default", "b": "bakery"},
        {},
        [],
        task_routes={"/v1/a/actuals": ("a", "feedback"), "/v1/b/actuals": ("b", "feedback")},
        protect_predictions=True,
    )
    assert not protected["/v1/a/predict"].anonymous
    # a task's data-in routes need a key of the owner's, even the default tenant's
    assert protected["/v1/a/actuals"] == RoutePolicy("feedback", "default", anonymous=False)
    assert protected["/v1/b/actuals"] == RoutePolicy("feedback", "bakery", anonymous=False)
