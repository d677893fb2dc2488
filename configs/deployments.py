"""Prefect deployments (schedules, event triggers); flows/deployments.py renders prefect.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
# an importable module path to the flow function (Prefect's module-path entrypoint), so a
# deployment runs from the installed package wherever the worker starts
ENTRYPOINT_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$"


class EventTriggerConfig(StrictModel):
    """Run the deployment when an event named ``event`` arrives from a resource matching ``match``;
    ``parameters`` may template the event (``{{ event.payload.trigger }}``)."""

    event: str = Field(..., min_length=1)
    match: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class DeploymentConfig(StrictModel):
    name: str = Field(..., pattern=NAME_PATTERN)
    entrypoint: str = Field(..., pattern=ENTRYPOINT_PATTERN)
    description: str = ""
    cron: str | None = None
    interval_s: float | None = Field(None, gt=0)
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    concurrency_limit: int | None = Field(None, ge=1)
    triggers: list[EventTriggerConfig] = Field(default_factory=list)

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, v: str | None) -> str | None:
        if v is not None and len(v.split()) != 5:
            raise ValueError("cron must have 5 fields (minute hour day month weekday)")
        return v

    @model_validator(mode="after")
    def _one_schedule(self) -> DeploymentConfig:
        if self.cron and self.interval_s:
            raise ValueError("set either cron or interval_s, not both")
        return self

    @property
    def entrypoint_module(self) -> str:
        return self.entrypoint.rsplit(".", 1)[0]


class DeploymentsConfig(StrictModel):
    project: str = "shelfwise"
    timezone: str = "UTC"
    project_root_env: str = Field("SHELFWISE_PROJECT_ROOT", pattern=r"^[A-Z_][A-Z0-9_]*$")
    schedules_active: bool = Field(True, description="false: deploy schedules paused")
    task_deployments: bool = Field(
        True, description="render train/tune/monitor/retrain deployments for every declared task"
    )
    retrain_event: str = "shelfwise.retrain.requested"
    deployments: list[DeploymentConfig] = Field(
        default_factory=list, description="deployments beyond the tasks' own"
    )

    @field_validator("deployments")
    @classmethod
    def _unique_names(cls, v: list[DeploymentConfig]) -> list[DeploymentConfig]:
        seen: set[str] = set()
        for d in v:
            if d.name in seen:
                raise ValueError(f"deployment name {d.name!r} appears twice")
            seen.add(d.name)
        return v

    def get(self, name: str) -> DeploymentConfig:
        for d in self.deployments:
            if d.name == name:
                return d
        raise KeyError(name)


def deployment_name(step: str, task: Any) -> str:
    """``<step>-<task>`` with dashes: the name of a task's deployment for a lifecycle step."""
    return f"{step}-{task.name.replace('_', '-')}"


def task_deployments(task: Any, retrain_event: str) -> list[DeploymentConfig]:
    """The deployments of one declared task: ``train-<task>`` (its ``schedules.train``),
    ``tune-<task>`` (tabular kinds), ``monitor-<task>`` (``schedules.monitor_*``) and
    ``retrain-<task>``, which the retrain event of the task's model starts."""
    from shelfwise.configs.tasks import STEP_FLOWS, TaskKind

    name, s = task.name, task.schedules
    flows = {step: kinds.get(task.kind) for step, kinds in STEP_FLOWS.items()}
    forecast = task.kind is TaskKind.forecast
    out = [
        DeploymentConfig(
            name=deployment_name("train", task),
            entrypoint=flows["train"],
            description=f"Training of {name}: every candidate family, the winner gated.",
            cron=s.train,
            parameters={"task": name, "trigger": "schedule" if s.train else "manual"},
            tags=[name, "training"],
        )
    ]
    if flows["tune"]:
        out.append(
            DeploymentConfig(
                name=deployment_name("tune", task),
                entrypoint=flows["tune"],
                description=f"Optuna search for {name}; registers a challenger.",
                cron=s.tune,
                parameters={"task": name},
                tags=[name, "tuning"],
            )
        )
    # a forecast's monitoring scores the actuals ingested into the store (POST
    # /v1/<task>/actuals, `shelfwise actuals`); `actuals: <file>` in a run's parameters instead
    monitor_params: dict[str, Any] = {"task": name}
    out.append(
        DeploymentConfig(
            name=deployment_name("monitor", task),
            entrypoint=flows["monitor"],
            description=f"Monitoring of the served {name} champion"
            + (" against realised actuals" if forecast else ": drift and feedback performance")
            + f"; emits {retrain_event} when the retrain policy fires.",
            cron=s.monitor_cron,
            interval_s=s.monitor_interval_s,
            parameters=monitor_params,
            tags=[name, "monitoring"],
        )
    )
    out += online_deployments(task)
    event_params = {
        "model": "{{ event.payload.model }}",
        "trigger": "{{ event.payload.trigger }}",
        "reason": "{{ event.payload.reason }}",
        "task": "{{ event.payload.task }}",  # the declaration whose monitoring decided
        **({"actuals": "{{ event.payload.actuals }}"} if forecast else {}),
    }
    out.append(
        DeploymentConfig(
            name=deployment_name("retrain", task),
            entrypoint=flows["retrain"],
            description=f"Retraining of {name} on its data plus "
            + ("the realised actuals" if forecast else "feedback-labelled production rows")
            + ", started by the monitoring flow's event; the challenger goes through the gate.",
            parameters={"task": name},
            concurrency_limit=1,
            tags=[name, "retraining"],
            triggers=[
                EventTriggerConfig(
                    event=retrain_event,
                    match={"prefect.resource.id": f"shelfwise.model.{task.registered_model}"},
                    parameters=event_params,
                )
            ],
        )
    )
    return out


def online_deployments(task: Any) -> list[DeploymentConfig]:
    """``online-compare-<task>`` when the task scores a challenger online (shadow or canary)
    and ``alarm-check-<task>`` when it declares alarms, on the task's intervals."""
    name, s, online = task.name, task.schedules, task.serving.challenger
    out = []
    if task.serving.enabled and (online.shadow or online.canary_fraction > 0):
        out.append(
            DeploymentConfig(
                name=deployment_name("online-compare", task),
                entrypoint="shelfwise.flows.online.online_compare_flow",
                description=f"Paired comparison of {name}'s @{online.alias} with its champion "
                "on labelled live requests, logged on the challenger's MLflow version.",
                interval_s=s.online_compare_interval_s,
                parameters={"task": name},
                tags=[name, "online"],
            )
        )
    if task.alarms.enabled:
        out.append(
            DeploymentConfig(
                name=deployment_name("alarm-check", task),
                entrypoint="shelfwise.flows.online.alarm_check_flow",
                description=f"Alarms on {name}'s champion (error rate, p99 latency, live metric "
                "vs @previous); a fired alarm rolls back and starts the cooldown.",
                interval_s=s.alarm_check_interval_s,
                parameters={"task": name},
                concurrency_limit=1,
                tags=[name, "alarms"],
            )
        )
    return out


def load_deployments_config(path: str | Path = "deployments") -> DeploymentsConfig:
    """configs/deployments.yaml plus, unless it says ``task_deployments: false``, the
    deployments of every declared task (configs/tasks/)."""
    cfg = load_config(resolve_config_path(path), DeploymentsConfig)
    if not cfg.task_deployments:
        return cfg
    from shelfwise.configs.tasks import load_tasks

    derived = [d for t in load_tasks() for d in task_deployments(t, cfg.retrain_event)]
    return DeploymentsConfig.model_validate(
        {**cfg.model_dump(), "deployments": [*derived, *cfg.deployments]}
    )
