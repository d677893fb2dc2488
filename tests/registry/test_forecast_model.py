"""The hybrid as one pyfunc version: log, register, load by alias, forecast (real MLflow server)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.datasets import load_timeseries_spec
from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
from shelfwise.models.datasets import load_timeseries
from shelfwise.models.forecast import HybridProphetXGBoost, prepare_panel
from shelfwise.registry import log as rlog
from shelfwise.registry.forecast_model import log_forecast_model


@pytest.fixture(scope="module")
def fitted(data_dir):
    raw = load_forecast_config("demand_forecast").model_dump()
    raw.update(horizon=28)
    raw["features"]["lags"] = [28, 364]
    raw["data"]["max_series"] = 3
    raw["xgboost"]["n_estimators"] = 50
    cfg = ForecastConfig.model_validate(raw)
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    panel = prepare_panel(df, spec, cfg)
    model = HybridProphetXGBoost(cfg).fit(panel)
    tail = panel.frame.groupby("sid").tail(28)
    wobble = np.where(np.arange(len(tail)) % 2 == 0, 1.1, 0.9)  # stand-in residuals
    model.calibrate(tail.assign(yhat=tail["y"] * wobble)[["sid", "y", "yhat"]])
    return model


@pytest.mark.slow
@pytest.mark.integration
def test_pyfunc_round_trip_through_registry(mlflow_server, fitted):
    mlflow.set_tracking_uri(mlflow_server)
    exp = rlog.get_or_create_experiment("test_demand_forecast")
    with mlflow.start_run(experiment_id=exp):
        info = log_forecast_model(fitted)
    name = "test_demand_forecast"
    version = rlog.register_version(info.model_uri, name, {rlog.TAG_TASK: name})
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, "challenger", version.version)

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
    sig = loaded.metadata.signature
    assert sig.inputs.input_names()[:3] == ["store", "item", "horizon"]
    assert sig.outputs.input_names() == [
        "date",
        "store",
        "item",
        "yhat",
        "yhat_lower",
        "yhat_upper",
    ]

    out = loaded.predict(pd.DataFrame({"store": [1, 1], "item": [2, 3], "horizon": [28, 5]}))
    assert list(out.columns) == ["date", "store", "item", "yhat", "yhat_lower", "yhat_upper"]
    assert len(out) == 33
    assert out["date"].min() == pd.Timestamp("2018-01-01")
    direct = fitted.predict(out[["store", "item", "date"]].rename(columns={"date": "ds"}))
    np.testing.assert_allclose(out["yhat"].to_numpy(), direct["yhat"].to_numpy())
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()

    one = loaded.predict(
        pd.DataFrame({"store": [1], "item": [1], "date": [pd.Timestamp("2018-01-10")]})
    )
    assert len(one) == 1 and one["yhat"].iloc[0] > 0

    with pytest.raises(Exception, match="unknown series"):
        loaded.predict(pd.DataFrame({"store": [99], "item": [1], "horizon": [3]}))
    with pytest.raises(Exception, match="horizon must be between 1 and 28"):
        loaded.predict(pd.DataFrame({"store": [1], "item": [1], "horizon": [29]}))
