"""The demand forecaster through the registry gate (real MLflow server, real data, few series).

One registered model, three trainings: v1 crippled (data to mid-2017) is the first version and
passes the floor; v2 (the shipped recipe, data to mid-2017 + 90 days) beats it on the 90 days
v1 was forecasting and is promoted; v3 crippled again (data to + 180 days) is compared with v2 on
v2's window, loses and @champion does not move.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from configs.loader import read_yaml
from models.forecast_metrics import smape
from registry import forecast_gate as fgate
from registry.history import HistoryStore
from tests.flows.forecast_helpers import CUTOFF, HORIZON, crippled, forecast_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _train(cfg, **kw) -> dict:
    from flows.forecast import train_demand_forecast

    return train_demand_forecast(config=str(cfg), **kw)


def test_forecast_gate_promotes_better_refuses_worse(
    tmp_path, monkeypatch, mlflow_server, prefect_harness
):
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("SHELFWISE_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("SHELFWISE_STORE_URL", store_url)
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    step = pd.Timedelta(days=HORIZON)
    good = forecast_config(tmp_path, train_end=str((CUTOFF + step).date()))
    name = read_yaml(good)["registered_model_name"]
    bad1 = crippled(forecast_config(tmp_path, name=name, train_end=str(CUTOFF.date())))
    bad3 = crippled(forecast_config(tmp_path, name=name, train_end=str((CUTOFF + 2 * step).date())))
    client = MlflowClient(mlflow_server)

    r1 = _train(bad1)
    g1 = r1["gate"]
    assert g1["promoted"] and g1["champion_after"] == r1["version"] == "1", g1["reasons"]
    assert g1["reasons"][0] == "first version: passes the floors"

    r2 = _train(good)
    g2 = r2["gate"]
    assert g2["promoted"], g2["reasons"]
    assert g2["champion_before"] == "1" and g2["champion_after"] == "2"
    checks = {c["name"]: c for c in g2["gate"]["checks"]}
    assert checks["champion_comparable"]["passed"]
    # identical rows: v2's holdout is exactly v1's forecast window (origin = v1's data end)
    mv2 = client.get_model_version(name, "2")
    ev = fgate.load_eval_set(client, mv2.run_id, ["store", "item"])
    assert ev.origin == CUTOFF
    assert ev.frame["ds"].min() == CUTOFF + pd.Timedelta(days=1)
    assert ev.frame["ds"].max() == CUTOFF + step
    assert g2["gate"]["eval_fingerprint"] == ev.fingerprint
    mlflow.set_tracking_uri(mlflow_server)
    champ_pred = fgate.score_forecaster(f"models:/{name}/1", ev)
    assert g2["gate"]["champion_metrics"]["smape"] == pytest.approx(smape(ev.y, champ_pred))
    assert g2["gate"]["challenger_metrics"]["smape"] == pytest.approx(
        smape(ev.y, ev.forecasts("hybrid"))
    )
    interval = g2["gate"]["interval"]
    assert interval["low"] > 0  # SMAPE points better, CI over series
    base = g2["gate"]["baselines"]
    assert {"prophet", "xgboost", "seasonal_naive_week", "seasonal_naive_year"} <= set(base)
    assert g2["gate"]["challenger_metrics"]["smape"] < base["seasonal_naive_year"]["smape"]
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    tags = client.get_model_version(name, "2").tags
    assert "shelfwise.promotion.baseline.seasonal_naive_week.smape" in tags

    r3 = _train(bad3)
    g3 = r3["gate"]
    assert not g3["promoted"], g3["reasons"]
    assert g3["champion_before"] == g3["champion_after"] == "2"
    assert any(r.startswith("smape improvement -") for r in g3["reasons"]), g3["reasons"]
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version_by_alias(name, "challenger").version == "3"
    store = HistoryStore.from_url(store_url)
    try:
        entries = store.entries(name)
    finally:
        store.dispose()
    assert [(e.to_version, e.decision) for e in entries] == [
        ("1", "promoted"),
        ("2", "promoted"),
        ("3", "refused"),
    ]
    print(
        "gate numbers",
        {
            f"v{r['version']}": {
                "challenger_smape": r["gate"]["gate"]["challenger_metrics"]["smape"],
                "champion_smape": (r["gate"]["gate"]["champion_metrics"] or {}).get("smape"),
                "interval": r["gate"]["gate"]["interval"],
                "baselines": {
                    k: v["smape"] for k, v in (r["gate"]["gate"]["baselines"] or {}).items()
                },
            }
            for r in (r1, r2, r3)
        },
    )
    assert np.isfinite(g3["gate"]["challenger_metrics"]["mae"])
