"""Forecast tasks over live data, through the service in process (its ASGI app) against the
session's real MLflow server: ``POST /v1/<task>/actuals`` (API key, validation naming row and
column with nothing stored, idempotent, corrections audited), forecasts that start after the
latest actual (origin and version in the answer, the stale window's dates unchanged without a
correction, rescaled with one), and what-if regressors on a Walmart-weekly XGBoost (baseline
beside the what-if; unknown regressors are a 4xx naming them)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from shelfwise.monitoring.actuals import ActualsStore
from shelfwise.monitoring.alerts import AlertStore
from tests.serving.conftest import served_client, service_env

pytestmark = pytest.mark.integration

KEY = "actuals-key-1"
AUTH = {"X-API-Key": KEY}
TRAINED_UNTIL = pd.Timestamp("2017-12-31")  # forecast_v1: the whole store-item file
WALMART_END = pd.Timestamp("2012-08-31")


@pytest.fixture(scope="module")
def walmart_v1(mlflow_server: str, data_dir: Path):
    """A global XGBoost on the 45 Walmart stores up to 2012-08-31 (regressors: holiday flag,
    temperature, fuel price, CPI, unemployment), registered as <name>@champion."""
    import mlflow

    from shelfwise.configs.datasets import load_timeseries_spec
    from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
    from shelfwise.models.datasets import load_timeseries
    from shelfwise.models.forecast import GlobalXGBoost, prepare_panel
    from shelfwise.registry import log as rlog
    from shelfwise.registry.forecast_model import log_forecast_model

    raw = load_forecast_config("demand_forecast_walmart").model_dump()
    raw.update(workers=1)
    raw["xgboost"].update(n_estimators=150, n_jobs=2)
    cfg = ForecastConfig.model_validate(raw)
    spec = load_timeseries_spec("walmart_weekly")
    df, _ = load_timeseries(spec, data_dir)
    model = GlobalXGBoost(cfg).fit(prepare_panel(df[df["Date"] <= WALMART_END], spec, cfg))
    name = f"walmart_weekly_actuals_{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(mlflow_server)
    with mlflow.start_run(experiment_id=rlog.get_or_create_experiment(f"serving-{name}")):
        info = log_forecast_model(model)
    mv = rlog.register_version(info.model_uri, name, {rlog.TAG_TASK: "walmart_weekly"})
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", mv.version)
    return name, str(mv.version), model, df


def _task(name: str, model: str, **keys) -> dict:
    from shelfwise.configs.loader import configs_dir

    raw = yaml.safe_load((configs_dir() / "tasks" / f"{name}.yaml").read_text())
    raw.update(model_name=model, **keys)
    return raw


@pytest.fixture(scope="module")
def served(mlflow_server: str, forecast_v1, walmart_v1, tmp_path_factory):

    folder = tmp_path_factory.mktemp("actuals-api")
    tasks = folder / "tasks"
    tasks.mkdir()
    strict = {
        "data": {"negative_target": "error"},
        "actuals": {"correction": "none"},
        "inventory": {"lead_time": 7, "service_level": 0.95, "alert_probability": 0.2},
    }
    declared = {
        "demand_forecast": _task("demand_forecast", forecast_v1.name, **strict),
        "demand_forecast_ratio": {
            **_task("demand_forecast", forecast_v1.name),
            "name": "demand_forecast_ratio",
            "serving": {},
            "actuals": {"correction": "ratio", "shrinkage": 0},
        },
        "walmart_weekly": _task("walmart_weekly", walmart_v1[0]),
    }
    for name, raw in declared.items():
        (tasks / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    store_url = f"sqlite:///{folder / 'store.db'}"
    with served_client(service_env(mlflow_server, store_url, tasks, KEY)) as (_, c):
        yield c, ActualsStore(store_url), store_url


def week(item: int, start: str = "2018-01-01", days: int = 7, value: float = 30.0) -> list:
    dates = pd.date_range(start, periods=days, freq="D")
    return [
        {"store": 1, "item": item, "date": d.date().isoformat(), "sales": value + i}
        for i, d in enumerate(dates)
    ]


def test_openapi_lists_the_actuals_routes(served) -> None:
    client, _, _ = served
    paths = client.get("/docs.json").json()["paths"]
    assert {"/v1/demand-forecast/actuals", "/v1/walmart-weekly/actuals"} <= set(paths)


def test_actuals_need_the_api_key(served) -> None:
    client, store, _ = served
    r = client.post("/v1/demand-forecast/actuals", json={"rows": week(3)})
    assert r.status_code == 401, r.text
    hist = store.series_history("demand_forecast", {"store": 1, "item": 3}, ["store", "item"])
    assert hist.empty


def test_actuals_are_idempotent_and_corrections_audited(served) -> None:
    client, store, _ = served
    body = {"rows": week(1), "source": "till-export"}
    first = client.post("/v1/demand-forecast/actuals", json=body, headers=AUTH)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "task": "demand_forecast",
        "rows": 7,
        "inserted": 7,
        "updated": 0,
        "unchanged": 0,
    }
    again = client.post("/v1/demand-forecast/actuals", json=body, headers=AUTH).json()
    assert (again["inserted"], again["unchanged"]) == (0, 7)
    fixed = [{**week(1)[3], "sales": 99.0}]
    late = client.post("/v1/demand-forecast/actuals", json={"rows": fixed}, headers=AUTH).json()
    assert (late["updated"], late["inserted"]) == (1, 0)
    audit = store.audit("demand_forecast")
    assert len(audit) == 1 and audit.iloc[0]["old_value"] == 33.0
    assert audit.iloc[0]["new_value"] == 99.0
    hist = store.series_history("demand_forecast", {"store": 1, "item": 1}, ["store", "item"])
    assert len(hist) == 7 and hist["y"].iloc[3] == 99.0


@pytest.mark.parametrize(
    ("change", "column", "words"),
    [
        ({"item": 777}, "store", "unknown series (store=1, item=777)"),
        ({"date": "2018-01-01"}, "date", "is also row 0"),
        ({"sales": -2.0}, "sales", "negative"),
        ({"item": "three"}, "item", "must be an integer"),
        ({"sales": True}, "sales", "finite number"),
    ],
)
def test_bad_actuals_are_422_naming_row_and_column_and_store_nothing(
    served, change, column, words
) -> None:
    client, store, _ = served
    rows = week(3)
    rows[1] = {**rows[1], **change}
    r = client.post("/v1/demand-forecast/actuals", json={"rows": rows}, headers=AUTH)
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]
    assert r.json()["detail"][0]["loc"] == ["rows", 1, column]
    hist = store.series_history("demand_forecast", {"store": 1, "item": 3}, ["store", "item"])
    assert hist.empty


def test_forecast_starts_after_the_latest_actual(served, forecast_v1) -> None:
    client, _, _ = served
    r = client.post("/v1/demand-forecast/actuals", json={"rows": week(2)}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = client.post(
        "/v1/demand-forecast/forecast", json={"series": {"store": 1, "item": 2}, "horizon": 28}
    ).json()
    assert body["origin"] == "2018-01-07" and body["trained_until"] == "2017-12-31"
    assert body["actuals_used"] == 7 and body["model_version"] == forecast_v1.version
    got = pd.DataFrame(body["forecast"])
    assert got["date"].iloc[0] == "2018-01-08" and len(got) == 28
    # dates the stale window covered keep their forecast (lags >= horizon; no correction) ...
    stale = forecast_v1.model.precompute()
    stale = stale[stale["sid"] == 1].assign(date=lambda f: f["ds"].dt.strftime("%Y-%m-%d"))
    both = got.merge(stale, on="date")
    assert len(both) == 21
    np.testing.assert_allclose(both["yhat_x"], both["yhat_y"], rtol=1e-9)
    assert got["yhat_lower"].notna().all() and (got["yhat_lower"] <= got["yhat"]).all()
    # ... and a series without actuals keeps the training origin (the precomputed window)
    other = client.post(
        "/v1/demand-forecast/forecast", json={"series": {"store": 1, "item": 3}, "horizon": 5}
    ).json()
    assert other["origin"] == "2017-12-31" and other["forecast"][0]["date"] == "2018-01-01"
    assert other["actuals_used"] == 0


def test_ratio_correction_rescales_the_moved_forecast(served) -> None:
    client, _, _ = served
    client.post("/v1/demand-forecast/actuals", json={"rows": week(2)}, headers=AUTH)
    request = {"series": {"store": 1, "item": 2}, "horizon": 14}
    plain = client.post("/v1/demand-forecast/forecast", json=request).json()
    rated = client.post("/v1/demand-forecast-ratio/forecast", json=request).json()
    # the ratio task has its own (empty) actuals: post the same week to it
    assert rated["actuals_used"] == 0
    client.post("/v1/demand-forecast-ratio/actuals", json={"rows": week(2)}, headers=AUTH)
    rated = client.post("/v1/demand-forecast-ratio/forecast", json=request).json()
    factor = rated["correction"]
    assert factor is not None and factor != pytest.approx(1.0)
    a = np.array([p["yhat"] for p in rated["forecast"]])
    b = np.array([p["yhat"] for p in plain["forecast"]])
    np.testing.assert_allclose(a, b * factor, rtol=1e-9)


def test_what_if_regressors_give_forecast_and_baseline(served, walmart_v1) -> None:
    client, _, _ = served
    request = {"series": {"Store": 1}, "horizon": 4, "regressors": {"Holiday_Flag": [1]}}
    r = client.post("/v1/walmart-weekly/forecast", json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["origin"] == WALMART_END.date().isoformat()
    what_if = [p["yhat"] for p in body["forecast"]]
    baseline = [p["yhat"] for p in body["baseline"]]
    assert what_if[1:] == pytest.approx(baseline[1:])  # only the period given changes
    assert what_if[0] > baseline[0]  # the model learned that holiday weeks sell more
    plain = client.post(
        "/v1/walmart-weekly/forecast", json={"series": {"Store": 1}, "horizon": 4}
    ).json()
    assert [p["yhat"] for p in plain["forecast"]] == pytest.approx(baseline)


@pytest.mark.parametrize(
    ("route", "regressors", "field", "words"),
    [
        ("/v1/walmart-weekly/forecast", {"Discount": [0.2]}, "Discount", "unknown regressor"),
        ("/v1/walmart-weekly/forecast", {"CPI": [1.0] * 9}, "CPI", "9 values"),
        ("/v1/demand-forecast/forecast", {"price": [1.0]}, "price", "declares no regressors"),
    ],
)
def test_bad_what_if_is_422_naming_the_regressor(served, route, regressors, field, words) -> None:
    client, _, _ = served
    series = {"Store": 1} if "walmart" in route else {"store": 1, "item": 1}
    r = client.post(route, json={"series": series, "horizon": 4, "regressors": regressors})
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]
    assert r.json()["detail"][0]["loc"] == ["regressors", field]


def test_stock_alerts_list_the_series_that_run_out(served, forecast_v1) -> None:
    client, _, store_url = served
    positions = [
        {"series": {"store": 1, "item": 3}, "on_hand": 5.0},  # a week sells far more
        {"series": {"store": 1, "item": 1}, "on_hand": 100000.0},
    ]
    route = "/v1/demand-forecast/stock-alerts"
    assert client.post(route, json={"positions": positions}).status_code == 401
    r = client.post(route, json={"positions": positions}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["evaluated"] == 2 and body["model_version"] == forecast_v1.version
    (alert,) = body["alerts"]
    assert alert["series"] == {"store": 1, "item": 3} and alert["status"] == "new"
    assert alert["severity"] == "critical" and alert["probability"] > 0.99
    assert alert["expected_stockout"] == "2018-01-01" and alert["shortfall"] > 0
    assert alert["origin"] == "2017-12-31"
    alerts = AlertStore(store_url)
    assert alerts.set_status("demand_forecast", alert["id"], "acknowledged")
    again = client.post(route, json={"positions": positions}, headers=AUTH).json()
    assert again["alerts"][0]["id"] == alert["id"]
    assert again["alerts"][0]["status"] == "acknowledged"
    restocked = [{"series": {"store": 1, "item": 3}, "on_hand": 100000.0}]
    assert client.post(route, json={"positions": restocked}, headers=AUTH).json()["alerts"] == []
    assert [a["id"] for a in alerts.alerts("demand_forecast", ["resolved"])] == [alert["id"]]


def test_stock_alerts_errors_name_the_field(served) -> None:
    client, _, _ = served
    bad = {"positions": [{"series": {"store": 1, "item": 999}, "on_hand": 1.0}]}
    r = client.post("/v1/demand-forecast/stock-alerts", json=bad, headers=AUTH)
    assert r.status_code == 404 and r.json()["detail"][0]["loc"][:2] == ["positions", "0"]
    none = client.post("/v1/demand-forecast/stock-alerts", json={}, headers=AUTH)
    assert none.status_code == 422 and "inventory.positions" in none.json()["error"]
    walmart = client.post(
        "/v1/walmart-weekly/stock-alerts",
        json={"positions": [{"series": {"Store": 1}, "on_hand": 1.0}]},
        headers=AUTH,
    )
    assert walmart.status_code == 422 and "declares no inventory" in walmart.json()["error"]
