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
    "prefect.warm_starts": "SHELFWISE_WARM_STARTS",
}

# imported by the warm server besides prefect.yaml's entrypoint modules: what the flows import
# inside functions (model families, reports, registry flavours) and the engine itself
WARM_PRELOAD: tuple[str, ...] = (
    "prefect.engine",
    "prefect.flow_engine",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "sklearn.preprocessing",
    "xgboost",
    "skops.io",
    "optuna",
    "evidently",
    "evidently.presets",
    "matplotlib.pyplot",
)


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
    warm_starts: bool = Field(
        True, description="flow runs fork from a server that has imported the flows once"
    )
    warm_preload: list[str] = Field(
        default_factory=lambda: list(WARM_PRELOAD),
        description="modules the warm server imports besides prefect.yaml's entrypoints",
    )
    warm_startup_timeout_s: float = Field(180.0, gt=0)


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
