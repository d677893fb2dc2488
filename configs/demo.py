"""`shelfwise demo` configuration: which declared tasks the demo's steps run, the scenario's
overrides of their declarations, and the smaller sizes of ``--reduced``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path


class DemoTaskConfig(StrictModel):
    """A declared task the demo runs, with keys of its declaration changed for the demo."""

    enabled: bool = True
    task: str = Field(..., min_length=1, description="task name or declaration path")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="merged over the declaration for every demo run"
    )
    reduced: dict[str, Any] = Field(default_factory=dict, description="overrides for --reduced")


class DemoScenarioConfig(DemoTaskConfig):
    """The loop's classification task, first trained on ``segment`` only."""

    segment: str = Field(..., min_length=1, description="pandas query: the first model's rows")


class DemoTuneConfig(StrictModel):
    enabled: bool = True
    n_trials: int = Field(8, ge=1)
    reduced_n_trials: int = Field(2, ge=1)
    cv_folds: int | None = Field(None, ge=2, description="None: the model config's")
    reduced_cv_folds: int = Field(2, ge=2)


class DemoLoopConfig(StrictModel):
    """Serve -> replay shifted traffic with feedback -> monitor -> event -> retrain -> swap."""

    enabled: bool = True
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
    scenario: DemoScenarioConfig
    tune: DemoTuneConfig = DemoTuneConfig()
    forecast: DemoTaskConfig | None = None
    loop: DemoLoopConfig = DemoLoopConfig()


def load_demo_config(path: str | Path = "demo") -> DemoConfig:
    return load_config(resolve_config_path(path), DemoConfig)
