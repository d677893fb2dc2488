"""`shelfwise demo` configuration: which configs and deployments the demo's steps use, the
scenario's overrides, and the smaller sizes of ``--reduced``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path


class DemoTaskConfig(StrictModel):
    config: str = Field(..., min_length=1, description="model config name or YAML path")
    deployment: str = Field(..., min_length=1, description="deployment that trains it")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="merged over the config for every demo run"
    )
    reduced: dict[str, Any] = Field(default_factory=dict, description="overrides for --reduced")


class DemoForecastConfig(StrictModel):
    enabled: bool = True
    config: str = Field("demand_forecast", min_length=1)
    deployment: str = Field("train-demand-forecast-nightly", min_length=1)
    max_series: int = Field(20, ge=1, description="series the demo trains on (nightly: all)")
    reduced_max_series: int = Field(3, ge=1)


class DemoTuneConfig(StrictModel):
    enabled: bool = True
    deployment: str = Field("tune-delay-risk-weekly", min_length=1)
    n_trials: int = Field(8, ge=1)
    reduced_n_trials: int = Field(2, ge=1)
    cv_folds: int | None = Field(None, ge=2, description="None: the model config's")
    reduced_cv_folds: int = Field(2, ge=2)


class DemoLoopConfig(StrictModel):
    """Serve -> replay shifted traffic with feedback -> monitor -> event -> retrain -> swap."""

    enabled: bool = True
    monitor_deployment: str = Field("monitor-delay-risk", min_length=1)
    retrain_deployment: str = Field("retrain-delay-risk", min_length=1)
    monitoring: str = Field("monitoring", min_length=1, description="monitoring config")
    monitoring_overrides: dict[str, Any] = Field(default_factory=dict)
    quiet_rows: int = Field(1000, ge=1, description="in-segment orders: no alarm expected")
    shifted_rows: int = Field(1000, ge=1, description="orders after the shift")
    shifted_share: float = Field(0.67, gt=0, le=1, description="unseen-segment share after it")
    batch_size: int = Field(100, ge=1, le=256)
    serve_timeout_s: float = Field(180.0, gt=0, description="champion loaded by the service")
    retrain_timeout_s: float = Field(900.0, gt=0, description="event -> retraining finished")
    swap_timeout_s: float = Field(120.0, gt=0, description="promotion -> service answers with it")


class DemoConfig(StrictModel):
    deploy: bool = True
    flow_run_timeout_s: float = Field(1200.0, gt=0)
    gate: str = Field("gate", min_length=1, description="gate config")
    gate_overrides: dict[str, Any] = Field(default_factory=dict)
    delay_risk: DemoTaskConfig = DemoTaskConfig(
        config="delay_risk", deployment="train-delay-risk-nightly"
    )
    tune: DemoTuneConfig = DemoTuneConfig()
    demand_forecast: DemoForecastConfig = DemoForecastConfig()
    loop: DemoLoopConfig = DemoLoopConfig()


def load_demo_config(path: str | Path = "demo") -> DemoConfig:
    return load_config(resolve_config_path(path), DemoConfig)
