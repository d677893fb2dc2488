"""API-key check for the serving endpoints, as an ASGI middleware (it also covers the batched
endpoint, whose requests BentoML merges before the API method runs).

Feedback and admin routes always need the key; prediction routes too when
``auth.protect_predictions`` is set. The key is sent as ``X-API-Key: <key>`` or
``Authorization: Bearer <key>``. With no key configured, protected routes are refused (403), never
left open.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from shelfwise.configs.platform import PlatformConfig
from shelfwise.configs.serving import ServingSettings

logger = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"


def protected_routes(
    settings: ServingSettings, admin_routes: Iterable[str], prediction_routes: Iterable[str]
) -> tuple[str, ...]:
    routes = list(admin_routes)
    if settings.auth.protect_predictions:
        routes += list(prediction_routes)
    return tuple(routes)


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


class ApiKeyMiddleware:
    def __init__(
        self,
        app: Any,
        routes: Iterable[str],
        settings_loader: Callable[[], ServingSettings],
        platform_loader: Callable[[], PlatformConfig],
    ) -> None:
        self.app = app
        settings = settings_loader()
        self.key = settings.api_key(platform_loader().serving.api_key)
        self.key_env = settings.auth.api_key_env
        self.routes = {r.rstrip("/") for r in routes}
        if not self.key:
            logger.warning(
                "no API key configured (%s): %s refuse every request",
                self.key_env,
                ", ".join(sorted(self.routes)),
            )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") not in self.routes:
            await self.app(scope, receive, send)
            return
        if not self.key:
            await _reply(send, 403, f"no API key is configured on the server (set {self.key_env})")
            return
        given = presented_key(scope.get("headers", []))
        if given is None:
            await _reply(send, 401, "missing API key: send the X-API-Key header")
            return
        if not hmac.compare_digest(given.encode(), self.key.encode()):
            await _reply(send, 401, "invalid API key (X-API-Key header)")
            return
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
