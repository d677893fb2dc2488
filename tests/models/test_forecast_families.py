"""Forecast families compete: each is one forecaster object with the same ``predict``
(seasonal naive, Prophet alone, global XGBoost alone, the hybrid), the backtest's winner is
never worse than another candidate, short series get the declared fallback, intervals are
conformal (calibrated on out-of-sample residuals) and hourly panels train. Real store_item and
walmart_weekly series, few of them, short horizons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.datasets import TimeSeriesDatasetSpec, load_timeseries_spec
from shelfwise.configs.forecast import ForecastConfig
from shelfwise.configs.tasks import load_task, training_config
from shelfwise.flows.forecast import candidates_table
from shelfwise.models.backtest import backtest
from shelfwise.models.datasets import load_timeseries
from shelfwise.models.forecast import (
    FallbackForecaster,
    fit_with_fallback,
    make_forecaster,
    prepare_panel,
)
from shelfwise.registry.forecast_model import forecast

FAMILIES = ["seasonal_naive", "prophet", "xgboost", "hybrid"]
H = 28


def small_config(n_series: int, **over) -> ForecastConfig:
    cfg = training_config(load_task("demand_forecast"))
    raw = cfg.model_dump()
    raw.update(horizon=H, workers=1, batch_size=10, candidates=FAMILIES)
    raw["features"]["lags"] = [H, 364]
    raw["backtest"]["folds"] = 2
    raw["xgboost"].update(n_estimators=150, n_jobs=1)
    raw["data"]["max_series"] = n_series
    for k, v in over.items():
        raw[k] = {**raw[k], **v} if isinstance(v, dict) else v
    return ForecastConfig.model_validate(raw)


@pytest.fixture(scope="module")
def store_item(data_dir):
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    return spec, df


@pytest.fixture(scope="module")
def family_backtest(store_item):
    spec, df = store_item
    cfg = small_config(6)
    panel = prepare_panel(df, spec, cfg)
    return panel, cfg, backtest(panel, cfg)


def test_selected_family_is_never_worse_than_another_candidate(family_backtest):
    _, cfg, result = family_backtest
    table = candidates_table(result, cfg, "smape")
    pool = table[table["candidate"]].set_index("family")
    assert set(pool.index) == set(FAMILIES)
    winner = table.loc[table["selected"], "family"].item()
    for fam in FAMILIES:
        assert pool.loc[winner, "smape_mean_folds"] <= pool.loc[fam, "smape_mean_folds"], table
        assert result.mean_metric(fam, "smape") == pytest.approx(pool.loc[fam, "smape_mean_folds"])
    # the references are reported, never selected
    assert not table.loc[~table["candidate"], "selected"].any()
    # every candidate beats nothing by construction: the naive baseline is scored on the rows
    assert np.isfinite(pool.loc["seasonal_naive", "smape"])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_one_forecaster_with_the_same_predict(family_backtest, family):
    panel, cfg, result = family_backtest
    model = make_forecaster(family, cfg).fit(panel)
    assert model.family == family
    model.calibrate(result.residuals(family))
    request = model.keys[model.key_columns].head(3).assign(horizon=7)
    out = forecast(model, request)
    assert list(out.columns) == ["date", "store", "item", "yhat", "yhat_lower", "yhat_upper"]
    assert len(out) == 21 and np.isfinite(out[["yhat", "yhat_lower", "yhat_upper"]]).all().all()
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()
    # the precomputed window answers exactly like the lazy path
    model.precompute()
    pd.testing.assert_frame_equal(forecast(model, request), out)
    # a date request too, and later steps are wider (per-step conformal quantiles)
    first, last = out.iloc[0], out.iloc[6]
    assert last["yhat_upper"] - last["yhat_lower"] >= 0.0
    assert first["date"] == panel.frame["ds"].max() + panel.step


def test_short_series_get_the_declared_fallback_and_are_counted(store_item):
    spec, df = store_item
    df = df[(df["store"] == 1) & (df["item"] <= 4)]
    last = df["date"].max()
    short = df["item"].isin([2, 4]) & (df["date"] <= last - pd.Timedelta(days=100))
    df = df[~short]  # items 2 and 4 start 100 days before the end: a new product
    for fallback in ("seasonal_naive", "level"):
        cfg = small_config(4, data={"short_series": "fallback", "fallback": fallback})
        panel = prepare_panel(df, spec, cfg)
        assert panel.n_series == 4 and len(panel.short) == 2 and not panel.skipped
        model = fit_with_fallback("xgboost", panel, cfg)
        assert isinstance(model, FallbackForecaster) and model.n_fallback == 2
        out = forecast(model, model.keys[["store", "item"]].assign(horizon=H))
        assert len(out) == 4 * H and out["yhat"].notna().all()
        hist = df[df["item"] == 2].sort_values("date")["sales"].to_numpy()
        got = out[out["item"] == 2]["yhat"].to_numpy()
        if fallback == "seasonal_naive":  # 100 days < 364: the weekly season repeated
            np.testing.assert_array_equal(got, np.tile(hist[-7:], H // 7))
        else:
            np.testing.assert_allclose(got, hist[-7:].mean())
    skip = small_config(4, data={"short_series": "skip"})
    assert prepare_panel(df, spec, skip).n_series == 2


@pytest.mark.parametrize("task,n_series", [("demand_forecast", 20), ("walmart_weekly", 45)])
def test_conformal_intervals_cover_the_nominal_level_on_a_backtest(data_dir, task, n_series):
    declared = load_task(task)
    spec = declared.dataset_spec()
    cfg = training_config(declared)
    raw = cfg.model_dump()
    raw.update(candidates=["xgboost"], workers=1)
    raw["data"]["max_series"] = n_series
    raw["xgboost"]["n_jobs"] = 1
    if task == "demand_forecast":
        raw.update(horizon=H)
        raw["features"]["lags"] = [H, 364]
        raw["backtest"]["folds"] = 4
    cfg = ForecastConfig.model_validate(raw)
    df, _ = load_timeseries(spec, data_dir)
    result = backtest(prepare_panel(df, spec, cfg), cfg, include=["xgboost"])
    fm = result.fold_metrics()
    cov = fm.loc[fm["fold"] >= 1, "coverage"]  # fold 0 has no earlier residuals
    assert cov.notna().all()
    level = cfg.intervals.level
    assert abs(cov.mean() - level) <= 0.03, fm


def test_an_hourly_panel_trains_and_forecasts():
    rng = np.random.default_rng(7)
    ds = pd.date_range("2024-01-01", periods=24 * 70, freq="h")
    rows = []
    for shop, base in (("a", 20.0), ("b", 55.0)):
        daily = 1 + 0.6 * np.sin(2 * np.pi * ds.hour / 24)
        weekly = 1 + 0.2 * (ds.dayofweek >= 5)
        y = rng.poisson(base * daily * weekly)
        rows.append(pd.DataFrame({"ts": ds, "shop": shop, "footfall": y}))
    df = pd.concat(rows, ignore_index=True)
    spec = TimeSeriesDatasetSpec(
        name="hourly",
        path="x.csv",
        time_column="ts",
        series_keys=["shop"],
        target="footfall",
        frequency="H",
    )
    cfg = ForecastConfig(
        horizon=24,
        candidates=["seasonal_naive", "xgboost"],
        features={
            "lags": [24, 168],
            "rolling_windows": [24],
            "level_window": 168,
            "calendar": ["hour", "dayofweek"],
        },
        xgboost={"n_estimators": 100, "n_jobs": 1},
        backtest={"folds": 3},
    )
    panel = prepare_panel(df, spec, cfg)
    assert panel.frequency == "H" and panel.n_series == 2
    result = backtest(panel, cfg)
    table = candidates_table(result, cfg, "smape").set_index("family")
    assert (
        table.loc["xgboost", "smape_mean_folds"]
        < table.loc["seasonal_naive_week", "smape_mean_folds"]
    )
    model = fit_with_fallback(table.index[table["selected"]][0], panel, cfg)
    model.calibrate(result.residuals(model.family))
    out = forecast(model, pd.DataFrame({"shop": ["a", "b"], "horizon": [24, 24]}))
    assert len(out) == 48 and out["date"].min() == ds[-1] + pd.Timedelta(hours=1)
    assert out["date"].max() == ds[-1] + pd.Timedelta(hours=24)
    seasons = make_forecaster("seasonal_naive", cfg).fit(panel).seasons
    assert set(seasons.values()) == {168}
