"""Local stack configuration: what `shelfwise stack up` starts besides the servers' ports
(which live in configs/platform.yaml)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path

ENV_OVERRIDES: dict[str, str] = {
    "evidently.port": "SHELFWISE_EVIDENTLY_PORT",
    "serving.enabled": "SHELFWISE_SERVING_ENABLED",
}


class Enabled(StrEnum):
    auto = "auto"
    always = "always"
    never = "never"


class PrefectStackConfig(StrictModel):
    startup_timeout_s: float = Field(180.0, gt=0)
    worker_name: str = Field("shelfwise-worker", min_length=1)
    worker_limit: int = Field(2, ge=1)
    worker_startup_timeout_s: float = Field(120.0, gt=0)
    worker_query_s: float = Field(2.0, gt=0, description="how often the worker polls for runs")


class ServingStackConfig(StrictModel):
    enabled: Enabled = Enabled.auto
    target: str = Field("shelfwise.serving.service", min_length=1)
    health_path: str = "/readyz"
    startup_timeout_s: float = Field(180.0, gt=0)


class EvidentlyStackConfig(StrictModel):
    enabled: Enabled = Enabled.auto
    host: str = "127.0.0.1"
    port: int = Field(8001, ge=1, le=65535)
    workspace: Path = Path("evidently")
    startup_timeout_s: float = Field(120.0, gt=0)


class StackConfig(StrictModel):
    prefect: PrefectStackConfig = PrefectStackConfig()
    serving: ServingStackConfig = ServingStackConfig()
    evidently: EvidentlyStackConfig = EvidentlyStackConfig()


def load_stack_config(path: str | Path = "stack") -> StackConfig:
    return load_config(resolve_config_path(path), StackConfig, ENV_OVERRIDES)
