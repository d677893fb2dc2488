"""503 with the reason on the batched routes when their task's model is not loaded.

The single-row endpoints answer their own 503 naming ``model@alias``, but a batchable BentoML
API cannot return a custom response, and BentoML replaces the message of a raised 5xx with a
generic one. This ASGI middleware answers before the request reaches the batching dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shelfwise.serving.auth import send_error


class UnavailableGuard:
    """For ``routes``: when ``reason(path)`` returns a message, answer 503 with it (and
    ``Retry-After``) instead of calling the app."""

    def __init__(
        self,
        app: Any,
        routes: Iterable[str],
        reason: Callable[[str], str | None],
        retry_after_s: Callable[[], int],
    ) -> None:
        self.app = app
        self.routes = {r.rstrip("/") for r in routes}
        self.reason = reason
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope["path"].rstrip("/") if scope["type"] == "http" else None
        if path is not None and path in self.routes:
            why = self.reason(path)
            if why is not None:
                retry = [(b"retry-after", str(self.retry_after_s()).encode())]
                await send_error(send, 503, why, retry)
                return
        await self.app(scope, receive, send)
