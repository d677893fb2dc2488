"""Who may call which route, as an ASGI middleware (it also covers the batched endpoints, whose
requests BentoML merges before the API method runs).

Every request that presents a key (``X-API-Key: <key>`` or ``Authorization: Bearer <key>``) is
authenticated (serving/keys.py: a tenant's hashed key from the store, or the shared
``SHELFWISE_API_KEY`` as the ``default`` tenant with every scope). Then, per route
(``RoutePolicy``):

- a missing key where one is needed, a key that is malformed, unknown or revoked, or one without
  the route's scope: **401**;
- a route of a task another tenant owns: **404**, the answer of a route that does not exist, so
  a tenant cannot learn what the others serve;
- a key over its request rate (token bucket per key, ``auth.rate_limit``): **429** with
  ``Retry-After``; other keys are not affected.

Feedback and admin routes always need a key; prediction routes of the ``default`` tenant's
tasks take anonymous requests unless ``auth.protect_predictions`` is set (today's behaviour),
other tenants' always need one. The principal goes to the app in ``scope["state"]`` (the API
methods read it from ``ctx.request.state``). Keys are never logged.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from shelfwise.configs.tenants import DEFAULT_TENANT
from shelfwise.serving.keys import KeyAuthenticator, Principal

logger = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"
PRINCIPAL_STATE = "shelfwise_principal"
NOT_FOUND = "Not Found"


@dataclass(frozen=True)
class RoutePolicy:
    """``scope``: the key scope a route needs (None: any valid key, or none); ``owner``: the
    tenant owning the route's task (None: a route of every tenant); ``anonymous``: callable
    without a key."""

    scope: str | None
    owner: str | None = None
    anonymous: bool = False


def route_policies(
    prediction_routes: Mapping[str, str],
    owners: Mapping[str, str],
    scoped_routes: Mapping[str, str],
    open_routes: Iterable[str],
    task_routes: Mapping[str, tuple[str, str]] | None = None,
    protect_predictions: bool = False,
) -> dict[str, RoutePolicy]:
    """route -> policy. ``prediction_routes``: route -> task; ``owners``: task -> tenant;
    ``scoped_routes``: route -> scope (feedback, admin); ``open_routes``: any caller (versions);
    ``task_routes``: route -> (task, scope), a task's data-in routes (actuals, stock alerts),
    always with a key of the owner's."""
    out: dict[str, RoutePolicy] = {}
    for route, task in prediction_routes.items():
        owner = owners.get(task)
        anonymous = owner == DEFAULT_TENANT and not protect_predictions
        out[route.rstrip("/")] = RoutePolicy("predict", owner or "", anonymous)
    for route, (task, scope) in (task_routes or {}).items():
        out[route.rstrip("/")] = RoutePolicy(scope, owners.get(task) or "")
    for route, scope in scoped_routes.items():
        out[route.rstrip("/")] = RoutePolicy(scope)
    for route in open_routes:
        out[route.rstrip("/")] = RoutePolicy(None, None, anonymous=True)
    return out


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        lname = name.lower()
        if lname == API_KEY_HEADER.encode():
            return value.decode("latin-1").strip()
        if lname == b"authorization":
            text = value.decode("latin-1").strip()
            if text[:7].lower() == "bearer ":
                return text[7:].strip()
    return None


def principal_of(state: Any) -> Principal | None:
    """The request's principal (set by ``TenantAuthMiddleware``) from ``request.state`` or the
    scope's state mapping; None for an anonymous request."""
    if isinstance(state, Mapping):
        return state.get(PRINCIPAL_STATE)
    return getattr(state, PRINCIPAL_STATE, None)


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take()`` -> 0.0 (allowed) or the seconds
    until a token is there."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, now

    def take(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per key id (``rate`` <= 0: no limit). Per worker process."""

    MAX_BUCKETS = 100_000

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, max(1.0, burst), clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def wait_s(self, key_id: str) -> float:
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                if len(self._buckets) >= self.MAX_BUCKETS:
                    self._buckets.clear()
                bucket = self._buckets[key_id] = TokenBucket(self.rate, self.burst, now)
            return bucket.take(now)


class TenantAuthMiddleware:
    """Authenticates keys, enforces each route's policy and the per-key rate limit."""

    def __init__(
        self,
        app: Any,
        policies: Mapping[str, RoutePolicy],
        authenticator_factory: Callable[[], KeyAuthenticator],
        limiter_factory: Callable[[], RateLimiter],
    ) -> None:
        self.app = app
        self.policies = dict(policies)
        self._authenticator_factory = authenticator_factory
        self._limiter_factory = limiter_factory
        self._authenticator: KeyAuthenticator | None = None
        self._limiter: RateLimiter | None = None

    @property
    def authenticator(self) -> KeyAuthenticator:
        if self._authenticator is None:  # in the worker, at its first request
            self._authenticator = self._authenticator_factory()
        return self._authenticator

    @property
    def limiter(self) -> RateLimiter:
        if self._limiter is None:
            self._limiter = self._limiter_factory()
        return self._limiter

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        policy = self.policies.get(scope["path"].rstrip("/")) if scope["type"] == "http" else None
        if policy is None:
            await self.app(scope, receive, send)
            return
        given = presented_key(scope.get("headers", []))
        principal: Principal | None = None
        if given is not None:
            auth = self.authenticator
            if auth.cached(given):
                principal = auth.authenticate(given)
            else:  # a database read: off the event loop
                principal = await anyio.to_thread.run_sync(auth.authenticate, given)
            if principal is None:
                await _reply(send, 401, "invalid API key (X-API-Key header)")
                return
        elif not policy.anonymous:
            await _reply(send, 401, "missing API key: send the X-API-Key header")
            return
        if principal is not None:
            if policy.scope is not None and not principal.can(policy.scope):
                await _reply(send, 401, f"this API key lacks the {policy.scope!r} scope")
                return
            if policy.owner is not None and policy.owner != principal.tenant:
                await send_error(send, 404, NOT_FOUND)
                return
            wait = self.limiter.wait_s(principal.key_id)
            if wait > 0:
                retry = [(b"retry-after", str(max(1, math.ceil(wait))).encode())]
                await send_error(send, 429, "rate limit exceeded for this API key", retry)
                return
            scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        await self.app(scope, receive, send)


async def send_error(
    send: Any, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """An ASGI JSON error response ``{"error": message}`` (the middlewares answer with it)."""
    body = json.dumps({"error": message}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*head, *headers]})
    await send({"type": "http.response.body", "body": body})


async def _reply(send: Any, status: int, message: str) -> None:
    challenge = [(b"www-authenticate", b'ApiKey header="X-API-Key"')] if status == 401 else []
    await send_error(send, status, message, challenge)
