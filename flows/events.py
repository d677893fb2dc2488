"""The Prefect events Shelfwise emits and reacts to. The retrain deployment's trigger in
configs/deployments.yaml matches what ``emit_retrain_requested`` sends (a test checks it)."""

from __future__ import annotations

from typing import Any

RETRAIN_REQUESTED = "shelfwise.retrain.requested"


def model_resource(model: str) -> dict[str, str]:
    """The event resource for a registered model: ``shelfwise.model.<model>``."""
    return {"prefect.resource.id": f"shelfwise.model.{model}", "prefect.resource.name": model}


def retrain_payload(
    model: str, reason: str, trigger: str, task: str, **extra: Any
) -> dict[str, Any]:
    """``task`` is the declaration (name or path) whose monitoring decided: the retraining reads
    the same training and gate sections from it, so a retrain answers the incident of the model
    that was monitored."""
    return {"model": model, "reason": reason, "trigger": trigger, "task": task, **extra}


def emit_retrain_requested(model: str, reason: str, trigger: str, task: str, **extra: Any):
    """Ask for a retraining of ``model``; the `retrain-<model>` deployment's trigger starts it.
    Returns the emitted event (None when events are disabled).

    Sent straight to the API of the *current* settings, with the flow run's related resources.
    Prefect's ``emit_event`` goes through one process-wide EventsWorker that keeps the API URL it
    was created with, so a process that talked to another Prefect server first (a test harness,
    an earlier stack) would send the request there and no retraining would start."""
    from prefect.client.orchestration import get_client
    from prefect.events import Event
    from prefect.events.clients import get_events_client
    from prefect.events.related import related_resources_from_run_context
    from prefect.events.worker import should_emit_events
    from prefect.utilities.asyncutils import run_coro_as_sync

    if not should_emit_events():
        return None
    event = Event(
        event=RETRAIN_REQUESTED,
        resource=model_resource(model),
        payload=retrain_payload(model, reason, trigger, task, **extra),
    )

    async def send() -> None:
        async with get_client() as client:
            event.related += await related_resources_from_run_context(client)
        async with get_events_client() as events:
            await events.emit(event)

    run_coro_as_sync(send())
    return event
