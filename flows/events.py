"""The Prefect events Shelfwise emits and reacts to. The retrain deployment's trigger in
configs/deployments.yaml matches what ``emit_retrain_requested`` sends (a test checks it)."""

from __future__ import annotations

from typing import Any

RETRAIN_REQUESTED = "shelfwise.retrain.requested"


def model_resource(model: str) -> dict[str, str]:
    """The event resource for a registered model: ``shelfwise.model.<model>``."""
    return {"prefect.resource.id": f"shelfwise.model.{model}", "prefect.resource.name": model}


def retrain_payload(model: str, reason: str, trigger: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "reason": reason, "trigger": trigger, **extra}


def emit_retrain_requested(model: str, reason: str, trigger: str, **extra: Any):
    """Ask for a retraining of ``model``; the `retrain-<model>` deployment's trigger starts it.
    Returns the emitted event (None when events are disabled)."""
    from prefect.events import emit_event

    return emit_event(
        RETRAIN_REQUESTED,
        resource=model_resource(model),
        payload=retrain_payload(model, reason, trigger, **extra),
    )
