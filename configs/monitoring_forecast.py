"""Monitoring of the served demand forecaster: its forecasts against realised actuals."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path


class ForecastPerformanceRule(StrictModel):
    floor: float = Field(40.0, gt=0, description="SMAPE (%) above this on actuals: retrain")
    max_drop: float = Field(
        5.0, ge=0, description="SMAPE points worse than the version's gate SMAPE: retrain"
    )
    min_rows: int = Field(
        100, ge=1, description="fewer scored (series, date) rows than this: no verdict"
    )


class ForecastRetrainPolicy(StrictModel):
    performance: ForecastPerformanceRule = ForecastPerformanceRule()
    window_realised_share: float = Field(
        0.9,
        gt=0,
        le=1,
        description="retrain when actuals have arrived for this share of the champion's "
        "forecast window (it is running out of future to forecast)",
    )
    cooldown_minutes: float = Field(60, ge=0)


class ForecastMonitoringConfig(StrictModel):
    model_name: str = Field(description="registered model (filled in from the task)")
    experiment: str = Field(description="MLflow experiment of the monitoring runs")
    evidently_project: str
    policy: ForecastRetrainPolicy = ForecastRetrainPolicy()
    retrain_event: str = "shelfwise.retrain.requested"


def load_forecast_monitoring_config(
    path: str | Path = "monitoring_forecast",
) -> ForecastMonitoringConfig:
    return load_config(resolve_config_path(path), ForecastMonitoringConfig)
