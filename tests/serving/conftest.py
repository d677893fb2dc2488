"""Serving fixtures: the real shipping data, and small delay-risk pipelines registered in the
session's real MLflow server under a model name of their own (other tests move `delay_risk`)."""

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
    from configs.datasets import load_tabular_spec
    from models.datasets import load_tabular

    spec = load_tabular_spec("ecommerce_shipping")
    df, _ = load_tabular(spec, data_dir)
    return df, spec


def fit_small_pipeline(df: pd.DataFrame, spec, n_estimators: int = 40, seed: int = 0):
    from configs.delay import XGBoostParams
    from models.delay import build_xgb_pipeline, features_and_target

    X, y = features_and_target(df, spec)
    params = XGBoostParams(n_estimators=n_estimators, max_depth=3, n_jobs=1)
    return build_xgb_pipeline(spec, params, seed).fit(X, y)


@pytest.fixture(scope="session")
def register_delay(mlflow_server: str, shipping_frame) -> Callable[..., Registered]:
    """``register(name, n_estimators, seed, alias)`` fits, logs and registers a version."""
    import mlflow

    from models.delay import features_and_target
    from registry import log as rlog

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
