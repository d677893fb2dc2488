"""CI-sized demand-forecast configs for the gate and monitoring tests: a few real series of
store_item_demand, a 90-day horizon (the shipped one), two backtest folds, light XGBoost."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import yaml

from shelfwise.configs.datasets import load_timeseries_spec
from shelfwise.configs.loader import configs_dir, read_yaml
from shelfwise.models.datasets import load_timeseries

N_SERIES = 5
HORIZON = 90
CUTOFF = pd.Timestamp("2017-06-30")  # "trained through mid-2017"
CRIPPLED_XGB = {"n_estimators": 1, "max_depth": 1, "learning_rate": 0.01}


def forecast_config(
    tmp_path: Path, name: str | None = None, horizon: int = HORIZON, **data
) -> Path:
    """A demand_forecast YAML with its own registered model and experiment."""
    raw = read_yaml(configs_dir() / "demand_forecast.yaml")
    name = name or f"demand_forecast_{uuid.uuid4().hex[:8]}"
    raw.update(registered_model_name=name, experiment=name, workers=1, plot_series=1)
    # one worker fitting in-process: these tests are about the gate and monitoring; the flow's
    # Prefect fan-out (a spawned process pool per fit) is tested in test_fanout.py and the demo
    raw["fanout"] = {"runner": "joblib", "address": None}
    raw["horizon"] = horizon
    raw["backtest"]["folds"] = 2
    raw["xgboost"].update(n_estimators=100, n_jobs=1)
    raw["data"].update({"max_series": N_SERIES, **data})
    path = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def crippled(path: Path) -> Path:
    """The same config with an XGBoost that learns (almost) nothing: a deliberately worse model."""
    raw = read_yaml(path)
    raw["xgboost"].update(CRIPPLED_XGB)
    out = path.with_name(path.stem + "-crippled.yaml")
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def actual_rows(data_dir: Path, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The data set's rows of the CI series in [start, end]: the realised actuals."""
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    keys = df[spec.series_keys].drop_duplicates().sort_values(spec.series_keys).head(N_SERIES)
    df = df.merge(keys, on=spec.series_keys)
    rows = df[(df[spec.time_column] >= start) & (df[spec.time_column] <= end)]
    return rows.sort_values([*spec.series_keys, spec.time_column]).reset_index(drop=True)


def write_actuals(path: Path, rows: pd.DataFrame) -> Path:
    out = rows.copy()
    out["date"] = out["date"].dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False)
    return path


def forecast_task(
    tmp_path: Path,
    name: str | None = None,
    horizon: int = HORIZON,
    candidates: list[str] | None = None,
    task_over: dict | None = None,
    **data,
) -> Path:
    """A task declaration copying configs/tasks/demand_forecast.yaml, with its training config
    from ``forecast_config`` (own registered model and experiment, few series) and, optionally,
    other candidates or keys."""
    training = forecast_config(tmp_path, name, horizon, **data)
    model = read_yaml(training)["registered_model_name"]
    raw = read_yaml(configs_dir() / "tasks" / "demand_forecast.yaml")
    raw.update(name=model, model_name=model, experiment=model, training=str(training))
    if candidates is not None:
        raw["candidates"] = candidates
    raw.update(task_over or {})
    path = tmp_path / f"task-{model}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def crippled_task(task_path: Path) -> Path:
    """The same task with its training config ``crippled``: a deliberately worse model."""
    raw = read_yaml(task_path)
    raw["training"] = str(crippled(Path(raw["training"])))
    out = task_path.with_name(task_path.stem + "-crippled.yaml")
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def train_and_gate(task_path: Path, **kw) -> dict:
    """``train_forecast`` (registers @challenger), then the forecast kind's gate on that version
    with the task's rule, as the flow's ``promote`` step does (through the evaluator and the
    shared promotion code, so the result is the gate-and-promote outcome)."""
    import mlflow

    from shelfwise.configs.platform import load_platform_config
    from shelfwise.configs.tasks import gate_rule, load_task
    from shelfwise.flows.forecast import train_forecast
    from shelfwise.flows.promote import _forecast_evaluator, _gate_with
    from shelfwise.registry.tracking import ensure_tracking_uri

    result = train_forecast(str(task_path), promote=False, **kw)
    platform = load_platform_config("platform")
    mlflow.set_tracking_uri(ensure_tracking_uri(platform))
    client = mlflow.MlflowClient()
    task = load_task(task_path)
    evaluate = _forecast_evaluator(client, result["model_name"], task, gate_rule(task))
    result["gate"] = _gate_with(
        platform, client, result["model_name"], result["version"], evaluate, "manual", None
    )
    return result
