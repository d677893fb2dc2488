"""Serving fixtures: the real shipping data, small delay-risk pipelines and a small demand-forecast
hybrid registered in the session's real MLflow server under model names of their own (other tests
move `delay_risk` and `demand_forecast`)."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest


def service_app(env: dict[str, str], mp: pytest.MonkeyPatch) -> tuple[ModuleType, Any]:
    """``shelfwise.serving.service`` (re)imported under ``env`` (its routes, tasks and owners are
    made at import) and its ASGI app. BentoML registers its HTTP metrics in the process-wide
    Prometheus registry when an app starts; a second app in the same test process (another
    module's fixture on the same xdist worker) would register them again, so those go first."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    for var, value in env.items():
        mp.setenv(var, value)
    registry = BentoMLContainer.metrics_client.get().registry
    for collector, names in list(registry._collector_to_names.items()):
        if any(n.startswith("bentoml_") for n in names):
            registry.unregister(collector)
    if "shelfwise.serving.service" in sys.modules:
        service = importlib.reload(sys.modules["shelfwise.serving.service"])
    else:
        service = importlib.import_module("shelfwise.serving.service")
    return service, service.ShelfwiseService.to_asgi()


def service_env(tracking: str, store_url: str, tasks: Path, api_key: str, **extra: str) -> dict:
    """The env a test service runs under: its registry, store, shared key and task folder, no
    alias polling (the tests swap explicitly), plus ``extra`` variables."""
    return {
        "SHELFWISE_TRACKING_URI": tracking,
        "SHELFWISE_STORE_URL": store_url,
        "SHELFWISE_API_KEY": api_key,
        "SHELFWISE_TASKS_DIR": str(tasks),
        "SHELFWISE_POLL_INTERVAL_S": "3600",
        **extra,
    }


@contextmanager
def served_client(env: dict[str, str]) -> Iterator[tuple[ModuleType, Any]]:
    """The service module and a started ``TestClient`` on its app, under ``env`` (the
    variables are restored afterwards); 5xx come back as responses, not exceptions."""
    from starlette.testclient import TestClient

    with pytest.MonkeyPatch.context() as mp:
        service, app = service_app(env, mp)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield service, client


def fuzz_operation(client, operation, api_key: str, max_examples: int) -> list[tuple[int, str]]:
    """Schemathesis cases of one OpenAPI ``operation`` (valid ones, and for POST also bodies
    that break the schema on purpose; bounded, derandomised) sent with ``api_key``: each
    answer's (status, text); a 5xx fails at once, naming the route and the body."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    strategy = operation.as_strategy(schemathesis.GenerationMode.POSITIVE)
    if operation.method.lower() == "post":
        strategy = st.one_of(strategy, operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    answers: list[tuple[int, str]] = []

    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case) -> None:
        kw = case.as_transport_kwargs(base_url="http://testserver")
        headers = {**(kw.get("headers") or {}), "X-API-Key": api_key}
        body = {"json": kw["json"]} if "json" in kw else {}
        if not body and kw.get("data") is not None:
            body["content"] = kw["data"]
        r = client.request(
            kw["method"], kw["url"], headers=headers, params=kw.get("params"), **body
        )
        assert r.status_code < 500, f"{operation.path} {body}: {r.status_code} {r.text}"
        answers.append((r.status_code, r.text))

    run()
    return answers


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
    from shelfwise.configs.tabular_training import XGBoostParams
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


# -- task declarations for the service (SHELFWISE_TASKS_DIR) ----------------------------------


def write_tasks_dir(folder: Path, model_names: dict[str, str], extra: dict | None = None) -> Path:
    """A folder of task declarations: copies of the shipped ``model_names`` tasks pointed at the
    tests' registered models (``task -> registered model``), plus ``extra`` (name -> mapping)."""
    import yaml

    from shelfwise.configs.loader import configs_dir

    folder.mkdir(parents=True, exist_ok=True)
    for task, model in model_names.items():
        raw = yaml.safe_load((configs_dir() / "tasks" / f"{task}.yaml").read_text())
        raw["model_name"] = model
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for task, raw in (extra or {}).items():
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


@dataclass(frozen=True)
class GeneratedTasks:
    """Two tasks on a CSV no code names: a classification (XGBoost) and a regression (ridge)."""

    folder: Path  # the task declarations (SHELFWISE_TASKS_DIR)
    csv: Path
    frame: pd.DataFrame
    classifier: Registered  # task basket_churn
    regressor: Registered  # task basket_value


def generated_frame(n: int = 400, seed: int = 7) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    channel = rng.choice(["web", "app", "store"], n)
    region = rng.choice(["north", "south", "east"], n)
    visits = rng.integers(0, 30, n)
    spend = rng.gamma(2.0, 40.0, n).round(2)
    tenure = rng.integers(1, 2000, n)
    logit = -1.0 + 0.08 * visits - 0.01 * spend + (channel == "app") * 0.8
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    value = 20 + 3.5 * visits + 0.01 * tenure + (channel == "store") * 15 + rng.normal(0, 4, n)
    return pd.DataFrame(
        {
            "customer": [f"C{i:04d}" for i in range(n)],
            "channel": channel,
            "region": region,
            "visits": visits,
            "spend": spend,
            "tenure_days": tenure,
            "churned": churned,
            "basket_value": value.round(2),
        }
    )


CHURN_TASK = {
    "name": "basket_churn",
    "kind": "classification",
    "data": {"missing": "error"},
    "serving": {"output": "churn_probability", "id_field": "customer"},
}
VALUE_TASK = {"name": "basket_value", "kind": "regression"}


@pytest.fixture(scope="session")
def generated_tasks(mlflow_server: str, tmp_path_factory) -> GeneratedTasks:
    import mlflow
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from shelfwise.configs.datasets import TabularDatasetSpec
    from shelfwise.configs.tabular_training import XGBoostParams
    from shelfwise.models.tabular import build_xgb_pipeline
    from shelfwise.registry import log as rlog

    folder = tmp_path_factory.mktemp("generated-tasks")
    frame = generated_frame()
    csv = folder / "baskets.csv"
    frame.to_csv(csv, index=False)
    suffix = uuid.uuid4().hex[:8]
    churn_spec = {
        "kind": "tabular",
        "name": "baskets_churn",
        "path": str(csv),
        "target": "churned",
        "id_column": "customer",
        "categorical": ["channel", "region"],
        "numeric": ["visits", "spend"],
    }
    value_spec = {
        **churn_spec,
        "name": "baskets_value",
        "target": "basket_value",
        "categorical": ["channel"],
        "numeric": ["visits", "tenure_days"],
    }
    mlflow.set_tracking_uri(mlflow_server)

    spec = TabularDatasetSpec.model_validate(churn_spec)
    X, y = frame[spec.features], frame[spec.target]
    params = XGBoostParams(n_estimators=30, max_depth=3, n_jobs=1)
    clf = build_xgb_pipeline(spec, params, 0).fit(X, y)
    clf_name = f"basket_churn_{suffix}"
    with mlflow.start_run(experiment_id=rlog.get_or_create_experiment(f"serving-{clf_name}")):
        info = rlog.log_classifier(clf, X.head(20), clf.predict_proba(X.head(20)))
        mv = rlog.register_version(info.model_uri, clf_name, {rlog.TAG_TASK: "basket_churn"})
    mlflow.MlflowClient().set_registered_model_alias(clf_name, "champion", mv.version)
    classifier = Registered(clf_name, str(mv.version), clf)

    vspec = TabularDatasetSpec.model_validate(value_spec)
    Xv, yv = frame[vspec.features], frame[vspec.target]
    encode = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["channel"]),
            ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), vspec.numeric),
        ],
        verbose_feature_names_out=False,
    )
    reg = Pipeline([("encode", encode), ("model", Ridge(alpha=1.0))]).fit(Xv, yv)
    reg_name = f"basket_value_{suffix}"
    with mlflow.start_run(experiment_id=rlog.get_or_create_experiment(f"serving-{reg_name}")):
        info = mlflow.sklearn.log_model(
            reg, name="model", input_example=Xv.head(5), skops_trusted_types=["numpy.dtype"]
        )
        mv = rlog.register_version(info.model_uri, reg_name, {rlog.TAG_TASK: "basket_value"})
    mlflow.MlflowClient().set_registered_model_alias(reg_name, "champion", mv.version)
    regressor = Registered(reg_name, str(mv.version), reg)

    tasks = folder / "tasks"
    write_tasks_dir(
        tasks,
        {},
        {
            "basket_churn": {**CHURN_TASK, "model_name": clf_name, "dataset": churn_spec},
            "basket_value": {**VALUE_TASK, "model_name": reg_name, "dataset": value_spec},
        },
    )
    return GeneratedTasks(tasks, csv, frame, classifier, regressor)
