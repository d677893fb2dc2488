"""HybridProphetXGBoost on real store_item series: quality vs baselines, leakage, intervals,
data handling (gaps, short series, off-grid dates)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.datasets import load_timeseries_spec
from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
from shelfwise.configs.loader import ConfigError, parse_model
from shelfwise.models.backtest import HYBRID, PROPHET, XGBOOST, backtest, run_fold
from shelfwise.models.datasets import DatasetError, load_timeseries
from shelfwise.models.forecast import (
    GlobalXGBoost,
    lag_features,
    prepare_panel,
    seasonal_naive,
    split_at,
)

HORIZON = 60


def small_config(n_series: int, **over) -> ForecastConfig:
    base = load_forecast_config("demand_forecast").model_dump()
    base["horizon"] = HORIZON
    base["features"]["lags"] = [HORIZON, 364]
    base["backtest"]["folds"] = 2
    base["data"]["max_series"] = n_series
    base["xgboost"]["n_estimators"] = 200
    base["batch_size"] = 6
    for k, v in over.items():
        base[k] = v
    return ForecastConfig.model_validate(base)


@pytest.fixture(scope="module")
def store_item(data_dir):
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    return spec, df


@pytest.fixture(scope="module")
def backtest_result(store_item):
    spec, df = store_item
    cfg = small_config(12)
    panel = prepare_panel(df, spec, cfg)
    return cfg, panel, backtest(panel, cfg)


@pytest.mark.slow
def test_hybrid_beats_seasonal_naive_and_prophet_alone(backtest_result):
    cfg, panel, result = backtest_result
    fm = result.fold_metrics().set_index(["family", "fold"])["smape"].unstack()
    mean = fm.mean(axis=1)
    assert mean[HYBRID] < mean[PROPHET], fm
    assert mean[HYBRID] < mean["seasonal_naive_week"], fm
    assert mean[HYBRID] < mean["seasonal_naive_year"], fm
    # on every fold, not just on average
    assert (fm.loc[HYBRID] < fm.loc[PROPHET]).all(), fm
    assert (fm.loc[HYBRID] < 0.85 * fm.loc["seasonal_naive_year"]).all(), fm
    # the XGBoost-alone baseline is computed beside it (reported, not asserted: see benchmark)
    assert np.isfinite(fm.loc[XGBOOST]).all()


@pytest.mark.slow
def test_interval_coverage_near_nominal(backtest_result):
    cfg, _, result = backtest_result
    m = result.metrics(HYBRID)  # latest fold, calibrated on the previous fold's residuals
    assert abs(m["coverage"] - cfg.intervals.level) < 0.07, m
    first = result.metrics(HYBRID, fold=0)
    assert np.isnan(first["coverage"])  # no earlier fold to calibrate on: no fake coverage


@pytest.mark.slow
def test_metrics_per_series_and_overall(backtest_result):
    _, panel, result = backtest_result
    table = result.series_metrics()
    assert len(table) == panel.n_series
    assert {"hybrid.smape", "prophet.mase", "xgboost.coverage"} <= set(table.columns)
    overall = result.metrics(HYBRID)
    assert table["hybrid.smape"].min() <= overall["smape"] <= table["hybrid.smape"].max()


@pytest.mark.slow
def test_changing_data_after_origin_does_not_change_the_forecast(store_item):
    spec, df = store_item
    cfg = small_config(3)
    panel = prepare_panel(df, spec, cfg)
    origin = panel.frame["ds"].max() - pd.Timedelta(days=HORIZON)
    altered = panel.frame.copy()
    after = altered["ds"] > origin
    altered.loc[after, "y"] = altered.loc[after, "y"] * 3 + 7
    a, _ = run_fold(panel, origin, 0, cfg, [HYBRID, XGBOOST])
    b, _ = run_fold(panel.with_frame(altered), origin, 0, cfg, [HYBRID, XGBOOST])
    cols = ["family", "sid", "ds", "yhat"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert not np.allclose(a["y"], b["y"])  # the truth did change


def test_lag_features_never_read_after_the_origin(store_item):
    spec, df = store_item
    cfg = small_config(2)
    panel = prepare_panel(df, spec, cfg)
    frame = panel.frame.sort_values(["sid", "ds"]).reset_index(drop=True)
    origin = frame["ds"].max() - pd.Timedelta(days=HORIZON)
    changed = frame.copy()
    changed.loc[changed["ds"] > origin, "y"] = 1e6
    rows = (frame["ds"] > origin) & (frame["ds"] <= origin + pd.Timedelta(days=HORIZON))
    pd.testing.assert_frame_equal(lag_features(frame, cfg)[rows], lag_features(changed, cfg)[rows])
    # ...whereas a lag shorter than the horizon would have read them
    short = cfg.model_copy(update={"features": cfg.features.model_copy(update={"lags": [1]})})
    assert not lag_features(frame, short)[rows].equals(lag_features(changed, short)[rows])


def test_lags_shorter_than_horizon_are_a_config_error():
    raw = load_forecast_config("demand_forecast").model_dump()
    raw["features"]["lags"] = [7, 364]
    with pytest.raises(ConfigError, match="features.lags"):
        parse_model(ForecastConfig, raw, "demand_forecast.yaml")


def test_served_forecast_from_stored_tail_matches_full_history(store_item):
    spec, df = store_item
    cfg = small_config(3)
    panel = prepare_panel(df, spec, cfg)
    model = GlobalXGBoost(
        cfg.model_copy(update={"xgboost": cfg.xgboost.model_copy(update={"n_estimators": 20})})
    ).fit(panel)
    pred = model.predict(model.future_request())
    # recompute on the whole history + future rows instead of the stored tail
    full = pd.concat([panel.frame[["sid", "ds", "y"]], model.future.assign(y=np.nan)])
    full = full.sort_values(["sid", "ds"]).reset_index(drop=True)
    X = model._design(full)
    mult, _ = model._base(X)
    direct = np.maximum(mult * model.booster.predict(X[model.feature_names]), 0)
    fut = full["y"].isna().to_numpy()
    np.testing.assert_allclose(np.sort(pred["yhat"].to_numpy()), np.sort(direct[fut]), rtol=1e-5)
    assert len(pred) == 3 * HORIZON


def test_precomputed_window_and_subset_scoring_change_no_value(store_item):
    """predict scores only the requested series' future rows, or looks them up in the
    ``precompute`` table: both give exactly what scoring tail + future rows together gave."""
    import pickle

    spec, df = store_item
    cfg = small_config(4)
    panel = prepare_panel(df, spec, cfg)
    model = GlobalXGBoost(
        cfg.model_copy(update={"xgboost": cfg.xgboost.model_copy(update={"n_estimators": 20})})
    ).fit(panel)
    # the way predict scored before: every tail + future row of the series, then the future ones
    frame = pd.concat([model.tail, model.future.assign(y=np.nan)], ignore_index=True)
    frame = frame.sort_values(["sid", "ds"]).reset_index(drop=True)
    X = model._design(frame)
    mult, off = model._base(X)
    scored = np.maximum(off + mult * model.booster.predict(X[model.feature_names]), 0.0)
    fut = frame["y"].isna().to_numpy()
    expected = frame.loc[fut, ["sid", "ds"]].assign(yhat=scored[fut]).reset_index(drop=True)

    request = model.future_request().sample(frac=0.5, random_state=1)
    one = model.future_request()
    one = one[(one["store"] == 1) & (one["item"] == 3)].head(9)
    lazy_all, lazy_one = model.predict(request), model.predict(one)
    table = model.precompute()
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    pd.testing.assert_frame_equal(model.predict(request), lazy_all, check_exact=True)
    pd.testing.assert_frame_equal(model.predict(one), lazy_one, check_exact=True)
    assert "_forecast_cache" not in pickle.loads(pickle.dumps(model)).__dict__


def test_seasonal_naive_repeats_last_season(store_item):
    spec, df = store_item
    panel = prepare_panel(df, spec, small_config(1))
    train, test = split_at(panel, panel.frame["ds"].max() - pd.Timedelta(days=10), 10)
    fc = seasonal_naive(train, test.frame[["sid", "ds"]], 7)
    last7 = train.frame["y"].to_numpy()[-7:]
    np.testing.assert_array_equal(fc["yhat"].to_numpy(), np.concatenate([last7, last7[:3]]))


def _tiny(spec_name="store_item_demand"):
    spec = load_timeseries_spec(spec_name)
    dates = pd.date_range("2020-01-01", periods=40, freq="D")
    df = pd.DataFrame(
        {"date": list(dates) * 2, "store": 1, "item": [1] * 40 + [2] * 40, "sales": 5.0}
    )
    return spec, df


def test_gaps_are_an_error_naming_series_and_date():
    spec, df = _tiny()
    df = df.drop(index=[10, 11])
    cfg = small_config(5, data={"gaps": "error", "short_series": "error", "min_history": 10})
    with pytest.raises(DatasetError, match=r"store=1, item=1.*2 missing period.*2020-01-11"):
        prepare_panel(df, spec, cfg)


def test_gaps_can_be_filled_and_are_logged(caplog):
    spec, df = _tiny()
    df = df.drop(index=[10, 11])
    cfg = small_config(5, data={"gaps": "fill_zero", "short_series": "error", "min_history": 10})
    with caplog.at_level("WARNING"):
        panel = prepare_panel(df, spec, cfg)
    assert len(panel.frame) == 80
    assert (panel.frame.set_index("ds").loc["2020-01-11", "y"] == 0).any()
    assert "filling 2 missing period(s)" in caplog.text


def test_short_series_error_or_skip(caplog):
    spec, df = _tiny()
    df = df[~((df["item"] == 2) & (df.index >= 60))]  # item 2 has 20 periods
    err = small_config(5, data={"gaps": "error", "short_series": "error", "min_history": 30})
    with pytest.raises(DatasetError, match=r"store=1, item=2\) has 20 periods; at least 30"):
        prepare_panel(df, spec, err)
    skip = small_config(5, data={"gaps": "error", "short_series": "skip", "min_history": 30})
    with caplog.at_level("WARNING"):
        panel = prepare_panel(df, spec, skip)
    assert panel.n_series == 1 and panel.skipped == [{"store": 1, "item": 2, "periods": 20}]
    assert "skipping series (store=1, item=2)" in caplog.text


def test_off_grid_weekly_dates_are_an_error():
    spec = load_timeseries_spec("walmart_weekly")
    dates = list(pd.date_range("2020-01-03", periods=30, freq="7D"))
    dates[5] = dates[5] + pd.Timedelta(days=2)
    df = pd.DataFrame(
        {
            "Date": dates,
            "Store": 1,
            "Weekly_Sales": 1.0,
            "Holiday_Flag": 0.0,
            "Temperature": 1.0,
            "Fuel_Price": 1.0,
            "CPI": 1.0,
            "Unemployment": 1.0,
        }
    )
    cfg = load_forecast_config("demand_forecast_walmart")
    with pytest.raises(DatasetError, match="off the W grid"):
        prepare_panel(df, spec, cfg)
