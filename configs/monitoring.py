"""Monitoring configuration: windows, drift tests, KPIs and the declarative retrain policy."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path


class WindowConfig(StrictModel):
    max_rows: int = Field(1000, ge=1, description="most recent predictions in the current window")
    min_rows: int = Field(500, ge=1, description="fewer rows than this: no drift verdict")
    days: int = Field(30, ge=1)


class DriftConfig(StrictModel):
    """Per-column tests are chosen explicitly: Evidently's default switches to p-value tests at
    <= 1,000 reference rows, which flagged ~2 of 10 columns on identically distributed windows."""

    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    threshold: float = Field(0.1, gt=0)
    prediction_method: str = "wasserstein"
    prediction_threshold: float = Field(0.1, gt=0)


class PerformanceRule(StrictModel):
    metric: Literal[
        "roc_auc", "pr_auc", "accuracy", "f1", "brier", "log_loss", "rmse", "mae", "r2"
    ] = "roc_auc"
    floor: float | None = Field(
        0.65, description="absolute bound on labelled production rows (None: none)"
    )
    max_drop: float | None = Field(
        0.05, ge=0, description="allowed drop below the version's own gate metric (metric units)"
    )
    max_relative_drop: float | None = Field(
        None, gt=0, description="allowed drop as a fraction of the gate metric, e.g. 0.2"
    )
    min_labelled_rows: int = Field(100, ge=1)


class RetrainPolicy(StrictModel):
    drift_share: float = Field(0.3, gt=0, le=1, description="share of drifted features")
    prediction_drift: bool = Field(True, description="prediction drift alone triggers")
    performance: PerformanceRule = PerformanceRule()
    new_feedback_rows: int = Field(
        5000, ge=1, description="retrain when this many labelled rows arrived since training"
    )
    cooldown_minutes: float = Field(60, ge=0)
    new_incident_labelled_rows: int = Field(
        500,
        ge=1,
        description="one retrain per incident (champion version + trigger) until this many "
        "labelled rows arrived after its request; then a retrain may be requested again",
    )


class KPIConfig(StrictModel):
    window_days: int = Field(30, ge=1)
    high_risk_threshold: float = Field(0.7, ge=0, le=1)
    segments: list[str] = Field(
        default_factory=list, description="categorical columns whose mean risk is reported"
    )


class MonitoringConfig(StrictModel):
    model_name: str = Field(description="registered model (filled in from the task)")
    experiment: str = Field(description="MLflow experiment of the monitoring runs")
    prediction_column: str = Field(description="the prediction's column in the prediction log")
    window: WindowConfig = WindowConfig()
    drift: DriftConfig = DriftConfig()
    policy: RetrainPolicy = RetrainPolicy()
    kpis: KPIConfig = KPIConfig()
    evidently_project: str
    retrain_event: str = "shelfwise.retrain.requested"


def load_monitoring_config(path: str | Path = "monitoring") -> MonitoringConfig:
    return load_config(resolve_config_path(path), MonitoringConfig)
