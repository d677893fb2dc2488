"""The Prefect events Shelfwise emits and reacts to. The retrain deployment's trigger in
configs/deployments.yaml matches what ``emit_retrain_requested`` sends (a test checks it)."""

from __future__ import annotations

from typing import Any

RETRAIN_REQUESTED = "shelfwise.retrain.requested"


def model_resource(model: str) -> dict[str, str]:
    """The event resource for a registered model: ``shelfwise.model.<model>``."""
    return {"prefect.resource.id": f"shelfwise.model.{model}", "prefect.resource.name": model}


def retrain_payload(
    model: str, reason: str, trigger: str, config: str = "monitoring", **extra: Any
) -> dict[str, Any]:
    """``config`` is the monitoring config that decided: the retraining reads the same model and
    gate configs from it, so a retrain answers the incident of the model that was monitored."""
    return {"model": model, "reason": reason, "trigger": trigger, "config": config, **extra}


def emit_retrain_requested(
    model: str, reason: str, trigger: str, config: str = "monitoring", **extra: Any
):
    """Ask for a retraining of ``model``; the `retrain-<model>` deployment's trigger starts it.
    Returns the emitted event (None when events are disabled)."""
    from prefect.events import emit_event

    return emit_event(
        RETRAIN_REQUESTED,
        resource=model_resource(model),
        payload=retrain_payload(model, reason, trigger, config, **extra),
    )
