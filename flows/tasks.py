"""Which flow runs each lifecycle step of a task: chosen by the task's *kind*, never its name.

The entrypoints are module paths, as Prefect deployments take them (``prefect.yaml``); the CLI
imports the same ones, so a verb and a deployment run the same flow with the same parameters
(``task`` = the declaration's name or path).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from shelfwise.configs.loader import ConfigError
from shelfwise.configs.tasks import STEP_FLOWS, TaskDeclaration


def entrypoint(step: str, task: TaskDeclaration) -> str:
    """The module path of the flow running ``step`` for ``task``; a step its kind lacks is a
    configuration error naming both."""
    flows = STEP_FLOWS[step]
    if task.kind not in flows:
        kinds = ", ".join(k.value for k in flows)
        raise ConfigError(
            f"task {task.name!r} ({task.source}): {step} is not available for kind "
            f"{task.kind.value!r} (only for {kinds})"
        )
    return flows[task.kind]


def flow_for(step: str, task: TaskDeclaration) -> Callable[..., Any]:
    module, _, name = entrypoint(step, task).rpartition(".")
    return getattr(importlib.import_module(module), name)


def task_ref(task: TaskDeclaration) -> str:
    """What flows get as their ``task`` parameter: the declaration's path (so a task YAML
    outside configs/tasks works the same), or its name."""
    return str(task.source) if task.source else task.name


def run_step(step: str, task: str, **params: Any) -> tuple[TaskDeclaration, Any]:
    """Load the declaration ``task`` (a name or a path) and run the flow of ``step`` for its
    kind with ``task`` passed on, as the CLI verbs do; returns (declaration, flow result)."""
    from shelfwise.configs.tasks import load_task

    declaration = load_task(task)
    return declaration, flow_for(step, declaration)(task=task_ref(declaration), **params)
