"""`shelfwise demo` configuration: which configs and deployments the demo's steps use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from configs.base import StrictModel
from configs.loader import load_config, resolve_config_path


class DemoTaskConfig(StrictModel):
    config: str = Field(..., min_length=1, description="model config name or YAML path")
    deployment: str = Field(..., min_length=1, description="deployment that trains it")
    reduced: dict[str, Any] = Field(default_factory=dict, description="overrides for --reduced")


class DemoConfig(StrictModel):
    deploy: bool = True
    flow_run_timeout_s: float = Field(1200.0, gt=0)
    delay_risk: DemoTaskConfig = DemoTaskConfig(
        config="delay_risk", deployment="train-delay-risk-nightly"
    )


def load_demo_config(path: str | Path = "demo") -> DemoConfig:
    return load_config(resolve_config_path(path), DemoConfig)
