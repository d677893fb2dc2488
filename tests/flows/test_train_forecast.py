"""``train-forecast`` on a task declared for a file no code names: store_item rows of four
products exported as CSV with returns (negative sales) and two products new in the last 120 days.
The flow backtests the declared candidates, registers the winner with its family and task
tagged, forecasts the new products with the declared fallback and reports how many."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from shelfwise.configs.datasets import load_timeseries_spec
from shelfwise.models.datasets import load_timeseries
from shelfwise.registry import forecast_gate as fgate
from shelfwise.registry.model_code import load_pyfunc

pytestmark = [pytest.mark.integration]


@pytest.fixture
def export(tmp_path, data_dir) -> tuple:
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    df = df[(df["store"] == 2) & (df["item"] <= 4)].reset_index(drop=True)
    last = df["date"].max()
    df = df[~(df["item"].isin([3, 4]) & (df["date"] <= last - pd.Timedelta(days=120)))]
    df = df.reset_index(drop=True)
    df.loc[[5, 50, 500], "sales"] = -3.0  # returns
    path = tmp_path / "shop_sales.csv"
    df.rename(columns={"date": "day", "sales": "units"}).assign(
        day=lambda d: d["day"].dt.strftime("%Y-%m-%d")
    ).to_csv(path, index=False)
    return path, df


def test_train_forecast_registers_the_winner_with_fallback_for_short_series(
    tmp_path, monkeypatch, prefect_harness, export
):
    from shelfwise.flows.forecast import train_forecast

    monkeypatch.setenv("SHELFWISE_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SHELFWISE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    path, df = export
    task = {
        "name": "shop_units",
        "kind": "forecast",
        "dataset": {
            "kind": "timeseries",
            "name": "shop_sales",
            "path": str(path),
            "time_column": "day",
            "series_keys": ["store", "item"],
            "target": "units",
            "frequency": "D",
        },
        "candidates": ["seasonal_naive", "xgboost"],
        "data": {"negative_target": "clip"},
        "training": {
            "horizon": 28,
            "features": {"lags": [28, 364]},
            "backtest": {"folds": 2},
            "xgboost": {"n_estimators": 80, "n_jobs": 1},
            "workers": 1,
            "plot_series": 1,
            "fanout": {"runner": "joblib"},
            "data": {"short_series": "fallback", "fallback": "seasonal_naive"},
        },
    }
    task_path = tmp_path / "shop_units.yaml"
    task_path.write_text(yaml.safe_dump(task, sort_keys=False))

    r = train_forecast(str(task_path), promote=False)

    assert r["task"] == "shop_units" and r["task_source"] == str(task_path)
    assert r["n_series"] == 4 and r["n_fallback"] == 2 and r["fallback"] == "seasonal_naive"
    assert r["negative_target"] == {"policy": "clip", "rows": 3}
    table = pd.DataFrame(r["candidates"]).set_index("family")
    pool = table[table["candidate"]]
    assert set(pool.index) == {"seasonal_naive", "xgboost"}
    assert r["family"] == pool["smape_mean_folds"].idxmin()
    assert 0.0 < r["coverage"] <= 1.0

    client = MlflowClient()
    mv = client.get_model_version(r["model_name"], r["version"])
    assert mv.tags[fgate.TAG_FORECAST_FAMILY] == r["family"]
    assert mv.tags["shelfwise.task"] == "shop_units"
    assert mv.tags["shelfwise.task_source"] == str(task_path)
    assert mv.tags["shelfwise.n_fallback_series"] == "2"
    assert client.get_model_version_by_alias(r["model_name"], "challenger").version == mv.version
    run = client.get_run(mv.run_id)
    assert run.data.metrics["n_fallback_series"] == 2
    assert run.data.metrics["negative_target_rows"] == 3
    arts = {a.path for a in client.list_artifacts(mv.run_id, "backtest")}
    assert "backtest/candidates.csv" in arts
    runs = mlflow.search_runs(experiment_ids=[r["experiment_id"]], output_format="list")
    fams = {x.data.tags.get(fgate.TAG_FORECAST_FAMILY) for x in runs}
    assert {"seasonal_naive", "xgboost"} <= fams  # one run per family, same metric names
    assert all("smape" in x.data.metrics for x in runs)

    model = load_pyfunc(f"models:/{r['model_name']}/{r['version']}")
    req = pd.DataFrame({"store": [2, 2, 2, 2], "item": [1, 2, 3, 4], "horizon": [14] * 4})
    out = model.predict(req)
    assert len(out) == 56 and out["yhat"].notna().all() and out["yhat_upper"].notna().all()
    hist = df[df["item"] == 3].sort_values("date")["sales"].clip(lower=0).to_numpy()
    got = out[out["item"] == 3]["yhat"].to_numpy()
    assert list(got) == list(hist[-7:]) * 2  # the fallback: the last week repeated
