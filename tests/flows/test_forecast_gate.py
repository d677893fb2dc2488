"""The demand forecaster through the registry gate (real MLflow server, real data, few series).

One registered model, three trainings: v1 Prophet alone (data to mid-2017) is the first version
and beats the seasonal naive (the forecast kind's baseline; a crippled hybrid does not, and is
refused); v2 (the hybrid, data to mid-2017 + 90 days) is compared with it on the 90 days v1 was
forecasting and is promoted; v3 a crippled hybrid (data to + 180 days) is compared with v2 on
v2's window, loses and @champion does not move.

The frequent retrain: champion trained to E, challengers to E + 14 days (horizon 28, so the
latest backtest origin is before E): both are compared on the gate fold, the 14 realised days
after E; a crippled challenger is refused there, the sound recipe is promoted.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from shelfwise.configs.loader import read_yaml
from shelfwise.models.forecast_metrics import smape
from shelfwise.registry import forecast_gate as fgate
from shelfwise.registry.history import HistoryStore
from tests.flows.forecast_helpers import (
    CUTOFF,
    HORIZON,
    N_SERIES,
    crippled_task,
    forecast_task,
    train_and_gate,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _train(task, **kw) -> dict:
    # the hybrid alone competes here: these tests are about the gate between versions of one
    # recipe (crippled or sound), not about which family wins (tests/models/test_forecast_families)
    return train_and_gate(task, **kw)


def _task(tmp_path, **kw):
    return forecast_task(tmp_path, candidates=["hybrid"], **kw)


@pytest.fixture
def platform_env(tmp_path, monkeypatch, mlflow_server) -> str:
    """The flows' platform settings for this test: the session's tracking server, a store and a
    state folder of its own. Returns the store URL."""
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("SHELFWISE_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("SHELFWISE_STORE_URL", store_url)
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    return store_url


def test_forecast_gate_promotes_better_refuses_worse(
    tmp_path, platform_env, mlflow_server, prefect_harness
):
    step = pd.Timedelta(days=HORIZON)
    good = _task(tmp_path, train_end=str((CUTOFF + step).date()))
    name = read_yaml(good)["model_name"]
    first = forecast_task(tmp_path, name=name, candidates=["prophet"], train_end=str(CUTOFF.date()))
    bad3 = crippled_task(_task(tmp_path, name=name, train_end=str((CUTOFF + 2 * step).date())))
    client = MlflowClient(mlflow_server)

    r1 = _train(first)
    g1 = r1["gate"]
    assert r1["family"] == "prophet"
    assert g1["promoted"] and g1["champion_after"] == r1["version"] == "1", g1["reasons"]
    assert g1["reasons"][0].startswith("first version"), g1["reasons"]
    checks1 = {c["name"]: c for c in g1["gate"]["checks"]}
    assert checks1["baseline:seasonal_naive:smape"]["passed"]  # beats the naive baseline

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
    assert checks["primary:smape"]["passed"], checks["primary:smape"]["detail"]
    base = g2["gate"]["baselines"]
    assert {"seasonal_naive", "seasonal_naive_week", "seasonal_naive_year"} <= set(base)
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
    store = HistoryStore.from_url(platform_env)
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


def test_frequent_retrain_is_gated_on_the_days_after_the_champions_data_end(
    tmp_path, platform_env, mlflow_server, prefect_harness
):
    horizon, k = 28, 14
    end = CUTOFF + pd.Timedelta(days=k)
    champ = _task(tmp_path, horizon=horizon, train_end=str(CUTOFF.date()))
    name = read_yaml(champ)["model_name"]
    sound = _task(tmp_path, name=name, horizon=horizon, train_end=str(end.date()))
    bad = crippled_task(sound)
    client = MlflowClient(mlflow_server)
    gate_days = list(pd.date_range(CUTOFF + pd.Timedelta(days=1), end, freq="D"))

    r1 = _train(champ)
    assert r1["gate"]["promoted"] and r1["version"] == "1", r1["gate"]["reasons"]
    v1 = client.get_model_version(name, "1")
    assert fgate.TAG_GATE_ORIGIN not in v1.tags
    assert v1.tags[fgate.TAG_FORECAST_FAMILY] == "hybrid" and v1.tags["shelfwise.task"] == name

    r2 = _train(bad)
    g2 = r2["gate"]
    assert not g2["promoted"], g2["reasons"]
    assert g2["champion_before"] == g2["champion_after"] == "1"
    checks = {c["name"]: c for c in g2["gate"]["checks"]}
    assert checks["champion_comparable"]["passed"], checks["champion_comparable"]["detail"]
    assert checks["eval_periods"]["passed"]
    assert not checks["primary:smape"]["passed"], checks["primary:smape"]["detail"]

    r3 = _train(sound)
    g3 = r3["gate"]
    assert g3["promoted"] and g3["champion_after"] == "3", g3["reasons"]
    checks = {c["name"]: c for c in g3["gate"]["checks"]}
    assert checks["champion_comparable"]["passed"] and checks["primary:smape"]["passed"]
    assert g3["reasons"][0] == "trained on later data and not worse than the champion"
    assert client.get_model_version_by_alias(name, "champion").version == "3"

    for r, g in ((r2, g2), (r3, g3)):
        mv = client.get_model_version(name, r["version"])
        assert mv.tags[fgate.TAG_GATE_ORIGIN] == str(CUTOFF.date())
        ev = fgate.load_eval_set(client, mv.run_id, ["store", "item"])
        # scored on exactly the realised days neither version saw: (E, E + k], every series
        assert ev.origin == CUTOFF
        assert sorted(ev.frame["ds"].unique()) == gate_days
        assert len(ev.frame) == k * N_SERIES
        assert g["gate"]["eval_fingerprint"] == ev.fingerprint
        assert g["gate"]["challenger_metrics"]["smape"] == pytest.approx(
            smape(ev.y, ev.forecasts("hybrid"))
        )
        # headline metrics stay the latest regular fold's; the gate fold's are gate_fold.*
        run = client.get_run(mv.run_id)
        assert run.data.metrics["gate_fold.smape"] == pytest.approx(
            g["gate"]["challenger_metrics"]["smape"]
        )
        latest = max(client.get_metric_history(mv.run_id, "smape"), key=lambda m: m.step)
        assert float(mv.tags["metric.smape"]) == pytest.approx(latest.value, abs=1e-5)
        assert latest.value != pytest.approx(run.data.metrics["gate_fold.smape"])
    mlflow.set_tracking_uri(mlflow_server)
    ev3 = fgate.load_eval_set(client, client.get_model_version(name, "3").run_id, ["store", "item"])
    champ_pred = fgate.score_forecaster(f"models:/{name}/1", ev3)
    assert g3["gate"]["champion_metrics"]["smape"] == pytest.approx(smape(ev3.y, champ_pred))
    print(
        "gate fold numbers",
        {
            f"v{r['version']}": {
                "challenger_smape": r["gate"]["gate"]["challenger_metrics"]["smape"],
                "champion_smape": (r["gate"]["gate"]["champion_metrics"] or {}).get("smape"),
                "interval": r["gate"]["gate"]["interval"],
            }
            for r in (r2, r3)
        },
    )
