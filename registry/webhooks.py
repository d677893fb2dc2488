"""Register the service's MLflow webhook for alias events (swaps pushed by the registry).

One webhook per service URL, named ``shelfwise-serving``: created when absent, otherwise updated
in place (URL, events, secret, ACTIVE), so ``shelfwise stack up`` can run any number of times.
The receiving end is serving/push.py.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shelfwise.registry.tracking import read_or_create_secret

logger = logging.getLogger(__name__)

WEBHOOK_NAME = "shelfwise-serving"
ALIAS_EVENTS = ("model_version_alias.created", "model_version_alias.deleted")


@dataclass(frozen=True)
class WebhookState:
    webhook_id: str
    url: str
    state: str  # created | updated


def webhook_secret(path: Path) -> str:
    """The signing secret shared by the tracking server's webhook and the service (made once)."""
    return read_or_create_secret(path, lambda: secrets.token_urlsafe(32))


def ensure_alias_webhook(
    client: Any, url: str, secret: str, name: str = WEBHOOK_NAME
) -> WebhookState:
    """Create or update the webhook ``name`` posting alias events to ``url``, signed with
    ``secret``. Raises MLflow's error when the server refuses it (e.g. a file store, or a URL its
    webhook settings do not allow)."""
    existing = [w for w in _all_webhooks(client) if w.name == name]
    for extra in existing[1:]:  # one per name: an older duplicate would sign with a stale secret
        client.delete_webhook(extra.webhook_id)
    description = "Shelfwise: alias moves swap the served version at once (serving/push.py)"
    if existing:
        hook = client.update_webhook(
            existing[0].webhook_id,
            url=url,
            events=list(ALIAS_EVENTS),
            secret=secret,
            status="ACTIVE",
            description=description,
        )
        state = "updated"
    else:
        hook = client.create_webhook(
            name=name,
            url=url,
            events=list(ALIAS_EVENTS),
            secret=secret,
            description=description,
        )
        state = "created"
    logger.info("MLflow webhook %s %s -> %s", name, state, url)
    return WebhookState(hook.webhook_id, url, state)


def _all_webhooks(client: Any) -> list[Any]:
    hooks, token = [], None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        hooks.extend(page)
        token = page.token
        if not token:
            return hooks
