"""Serving fixtures: the real shipping data, small delay-risk pipelines and a small demand-forecast
hybrid registered in the session's real MLflow server under model names of their own (other tests
move `delay_risk` and `demand_forecast`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    pipeline: object


@pytest.fixture(scope="session")
def shipping_frame(data_dir: Path) -> tuple[pd.DataFrame, object]:
    from shelfwise.configs.datasets import load_tabular_spec
    from shelfwise.models.datasets import load_tabular

    spec = load_tabular_spec("ecommerce_shipping")
    df, _ = load_tabular(spec, data_dir)
    return df, spec


def fit_small_pipeline(df: pd.DataFrame, spec, n_estimators: int = 40, seed: int = 0):
    from shelfwise.configs.delay import XGBoostParams
    from shelfwise.models.tabular import build_xgb_pipeline, features_and_target

    X, y = features_and_target(df, spec)
    params = XGBoostParams(n_estimators=n_estimators, max_depth=3, n_jobs=1)
    return build_xgb_pipeline(spec, params, seed).fit(X, y)


@pytest.fixture(scope="session")
def register_delay(mlflow_server: str, shipping_frame) -> Callable[..., Registered]:
    """``register(name, n_estimators, seed, alias)`` fits, logs and registers a version."""
    import mlflow

    from shelfwise.models.tabular import features_and_target
    from shelfwise.registry import log as rlog

    df, spec = shipping_frame

    def register(
        name: str, n_estimators: int = 40, seed: int = 0, alias: str | None = "champion"
    ) -> Registered:
        mlflow.set_tracking_uri(mlflow_server)
        pipe = fit_small_pipeline(df, spec, n_estimators, seed)
        X, _ = features_and_target(df, spec)
        exp = rlog.get_or_create_experiment(f"serving-tests-{name}")
        with mlflow.start_run(experiment_id=exp):
            info = rlog.log_classifier(pipe, X.head(20), pipe.predict_proba(X.head(20)))
            mv = rlog.register_version(info.model_uri, name, {"shelfwise.task": "delay_risk"})
        if alias:
            mlflow.MlflowClient().set_registered_model_alias(name, alias, mv.version)
        return Registered(name, str(mv.version), pipe)

    return register


@pytest.fixture(scope="session")
def delay_v1(register_delay) -> Registered:
    return register_delay(f"delay_risk_serving_{uuid.uuid4().hex[:8]}", n_estimators=40)


@dataclass(frozen=True)
class RegisteredForecast:
    name: str
    version: str
    model: object  # the fitted HybridProphetXGBoost
    metrics: dict[str, float]


FORECAST_HORIZON = 28
FORECAST_METRICS = {"smape": 12.5, "mase": 0.81, "coverage": 0.9}


@pytest.fixture(scope="session")
def forecast_v1(mlflow_server: str, data_dir: Path) -> RegisteredForecast:
    """A small hybrid (3 store_item series, horizon 28) registered as <name>@champion with gate
    metric tags, the way flows/forecast.py registers one."""
    import mlflow
    import numpy as np

    from shelfwise.configs.datasets import load_timeseries_spec
    from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
    from shelfwise.models.datasets import load_timeseries
    from shelfwise.models.forecast import HybridProphetXGBoost, prepare_panel
    from shelfwise.registry import log as rlog
    from shelfwise.registry.forecast_model import log_forecast_model

    raw = load_forecast_config("demand_forecast").model_dump()
    raw.update(horizon=FORECAST_HORIZON, workers=1)
    raw["features"]["lags"] = [FORECAST_HORIZON, 364]
    raw["data"]["max_series"] = 3
    raw["xgboost"].update(n_estimators=50, n_jobs=1)
    cfg = ForecastConfig.model_validate(raw)
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    panel = prepare_panel(df, spec, cfg)
    model = HybridProphetXGBoost(cfg).fit(panel)
    tail = panel.frame.groupby("sid").tail(FORECAST_HORIZON)
    wobble = np.where(np.arange(len(tail)) % 2 == 0, 1.1, 0.9)  # stand-in residuals
    model.calibrate(tail.assign(yhat=tail["y"] * wobble)[["sid", "y", "yhat"]])

    name = f"demand_forecast_serving_{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(mlflow_server)
    exp = rlog.get_or_create_experiment(f"serving-tests-{name}")
    with mlflow.start_run(experiment_id=exp):
        info = log_forecast_model(model)
    tags = {rlog.TAG_TASK: "demand_forecast"}
    tags.update({f"metric.{k}": f"{v:.6f}" for k, v in FORECAST_METRICS.items()})
    mv = rlog.register_version(info.model_uri, name, tags)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", mv.version)
    return RegisteredForecast(name, str(mv.version), model, dict(FORECAST_METRICS))
