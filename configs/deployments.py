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
    deployments: list[DeploymentConfig] = Field(default_factory=list)

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


def load_deployments_config(path: str | Path = "deployments") -> DeploymentsConfig:
    return load_config(resolve_config_path(path), DeploymentsConfig)
