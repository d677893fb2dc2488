"""503 with the reason on the batched delay-risk route when no model is loaded.

The single-order endpoints answer their own 503 naming ``model@alias``, but a batchable BentoML
API cannot return a custom response, and BentoML replaces the message of a raised 5xx with a
generic one. This ASGI middleware answers before the request reaches the batching dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shelfwise.serving.auth import send_error


class UnavailableGuard:
    """For ``routes``: when ``reason()`` returns a message, answer 503 with it (and
    ``Retry-After``) instead of calling the app."""

    def __init__(
        self,
        app: Any,
        routes: Iterable[str],
        reason: Callable[[], str | None],
        retry_after_s: Callable[[], int],
    ) -> None:
        self.app = app
        self.routes = {r.rstrip("/") for r in routes}
        self.reason = reason
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") in self.routes:
            why = self.reason()
            if why is not None:
                retry = [(b"retry-after", str(self.retry_after_s()).encode())]
                await send_error(send, 503, why, retry)
                return
        await self.app(scope, receive, send)
