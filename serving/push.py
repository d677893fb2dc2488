"""Swaps pushed by the registry: MLflow's alias webhooks, verified, wake the alias followers.

MLflow 3 (SQL backend) posts ``model_version_alias.created`` / ``.deleted`` events to a
registered webhook, signed with HMAC-SHA256 (``mlflow/webhooks/delivery.py``): header
``X-MLflow-Signature: v1,<base64 HMAC of "{delivery_id}.{timestamp}.{body}">`` with
``X-MLflow-Delivery-Id`` and ``X-MLflow-Timestamp`` (Unix seconds). A delivery is accepted only
when the signature matches (compared in constant time), the timestamp is inside the replay window
and the delivery id has not been seen. An accepted event only *wakes* the followers of that
alias: each then resolves the alias from the registry itself and swaps as it would on a poll, so
a forged body could at most cause an extra registry read, never choose a version. Polling stays
the fallback when a delivery is lost.

The receiver is an ASGI middleware, not a ``bentoml.api``: the signature covers the exact bytes
of the body, which a typed API would parse before the handler sees them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_HEADER = "x-mlflow-delivery-id"
SIGNATURE_VERSION = "v1"
ALIAS_EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
MAX_BODY_BYTES = 64 * 1024


class Rejected(Exception):
    """A delivery refused with ``status`` (401: not authentic, 400: malformed, 413: too big)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class AliasEvent:
    action: str  # created | deleted
    name: str  # registered model
    alias: str
    version: str | None  # the version the alias now points at (created only)
    delivery_id: str


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's webhook signature of ``body`` (the same bytes it posts)."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, max_age_s: float
) -> str:
    """The delivery id of an authentic delivery; raises :class:`Rejected` (401) otherwise.

    ``headers`` are looked up lower-case (ASGI header names are)."""
    signature = headers.get(SIGNATURE_HEADER)
    delivery_id = headers.get(DELIVERY_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    missing = [
        h
        for h, v in (
            (SIGNATURE_HEADER, signature),
            (DELIVERY_HEADER, delivery_id),
            (TIMESTAMP_HEADER, timestamp),
        )
        if not v
    ]
    if missing:
        raise Rejected(401, f"unsigned delivery: missing header(s) {', '.join(missing)}")
    assert signature and delivery_id and timestamp
    try:
        sent = float(timestamp)
    except ValueError:
        raise Rejected(401, f"{TIMESTAMP_HEADER} is not a Unix time: {timestamp[:40]!r}") from None
    if abs(now - sent) > max_age_s:
        raise Rejected(
            401, f"{TIMESTAMP_HEADER} is {now - sent:+.0f} s off (replay window {max_age_s:g} s)"
        )
    expected = sign(secret, delivery_id, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise Rejected(401, f"{SIGNATURE_HEADER} does not match the body")
    return delivery_id


def parse_event(body: bytes, delivery_id: str) -> AliasEvent | None:
    """The alias event in a verified body; None for any other entity (e.g. a test delivery of
    another event); raises :class:`Rejected` (400) when the body is not MLflow's payload."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise Rejected(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Rejected(400, "body is not a JSON object")
    if f"{doc.get('entity')}.{doc.get('action')}" not in ALIAS_EVENTS:
        return None
    data = doc.get("data")
    if not isinstance(data, dict):
        raise Rejected(400, "data: missing or not an object")
    for key in ("name", "alias"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise Rejected(400, f"data.{key}: missing or not a string")
    version = data.get("version")
    return AliasEvent(
        action=str(doc["action"]),
        name=data["name"],
        alias=data["alias"],
        version=str(version) if version is not None else None,
        delivery_id=delivery_id,
    )


class SeenDeliveries:
    """Delivery ids accepted within the replay window (bounded): a replayed delivery is a no-op."""

    def __init__(self, max_age_s: float, capacity: int = 10_000) -> None:
        self.max_age_s = max_age_s
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float) -> bool:
        with self._lock:
            while self._seen and (
                len(self._seen) >= self.capacity
                or next(iter(self._seen.values())) < now - 2 * self.max_age_s
            ):
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True


class WakeSignal:
    """A file whose modification time says "check the alias now" to every worker process.

    The worker that receives a delivery wakes its own followers directly and bumps the file; the
    followers of the other workers look at its mtime every ``tick`` seconds (a local ``stat``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._stamp()

    def _stamp(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def bump(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        os.utime(self.path, ns=(time.time_ns(), time.time_ns()))
        self._seen = self._stamp()

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True


def signal_path(folder: Path, registered_name: str, alias: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{registered_name}@{alias}")
    return folder / f"{safe}.wake"


class RegistryEventReceiver:
    """ASGI middleware answering ``POST route`` with the verified delivery's outcome.

    ``secret()`` is read per delivery (None: push is off here, 404); ``on_event(event)`` wakes
    the followers of the alias and returns their labels."""

    def __init__(
        self,
        app: Any,
        route: str,
        secret: Callable[[], str | None],
        max_age_s: float,
        on_event: Callable[[AliasEvent], list[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.route = route
        self.secret = secret
        self.max_age_s = max_age_s
        self.on_event = on_event
        self.clock = clock
        self.seen = SeenDeliveries(max_age_s)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != self.route:
            await self.app(scope, receive, send)
            return
        if scope.get("method") != "POST":
            await _respond(send, 405, {"error": f"{self.route} takes POST (MLflow webhooks)"})
            return
        status, doc = await self._handle(scope, receive)
        await _respond(send, status, doc)

    async def _handle(self, scope: Any, receive: Any) -> tuple[int, dict[str, Any]]:
        secret = self.secret()
        if not secret:
            return 404, {"error": "registry push is not configured on this service (no secret)"}
        try:
            body = await _read_body(receive)
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            now = self.clock()
            delivery_id = verify(secret, headers, body, now, self.max_age_s)
            if not self.seen.first_time(delivery_id, now):
                return 200, {"delivery_id": delivery_id, "duplicate": True, "woken": []}
            event = parse_event(body, delivery_id)
        except Rejected as exc:
            logger.warning("registry event refused (%d): %s", exc.status, exc.reason)
            return exc.status, {"error": exc.reason}
        if event is None:
            return 200, {"delivery_id": delivery_id, "ignored": "not an alias event", "woken": []}
        woken = self.on_event(event)
        logger.info(
            "registry event %s %s@%s -> %s: woke %s",
            event.action,
            event.name,
            event.alias,
            event.version,
            ", ".join(woken) or "nothing served here",
        )
        return 200, {"delivery_id": delivery_id, "event": event.action, "woken": woken}


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Rejected(400, "client disconnected before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Rejected(413, f"body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Any, status: int, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
