"""Forecasts from the latest known data (models/origin.py) on the real store-item data: with no
actuals a moved-origin forecast is the fitted one; actuals move the origin; nothing after the
origin is read (a changed actual first moves the forecast exactly min(lags) periods later);
gaps hold the origin back; and (model quality) a version trained up to T, given the actuals of
T+1..T+k, forecasts T+k+1.. more accurately than its stale forecast from T."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.datasets import load_timeseries_spec
from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
from shelfwise.models.datasets import load_timeseries
from shelfwise.models.forecast import make_forecaster, prepare_panel, split_at
from shelfwise.models.forecast_metrics import smape
from shelfwise.models.origin import OriginError, current_forecast, ratio_correction

H = 28
T = pd.Timestamp("2017-06-30")


def _config(series: int, trees: int) -> ForecastConfig:
    raw = load_forecast_config("demand_forecast").model_dump()
    raw.update(horizon=H, workers=1)
    raw["features"]["lags"] = [H, 364]
    raw["data"]["max_series"] = series
    raw["xgboost"].update(n_estimators=trees, n_jobs=2)
    return ForecastConfig.model_validate(raw)


def _panel(data_dir: Path, cfg: ForecastConfig):
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    return prepare_panel(df, spec, cfg)


@pytest.fixture(scope="module")
def small(data_dir: Path):
    cfg = _config(3, 30)
    train, test = split_at(_panel(data_dir, cfg), T, 2 * H)
    return cfg, train, test


def _actuals(test, sid: int, days: int) -> pd.DataFrame:
    f = test.frame
    return f[(f["sid"] == sid) & (f["ds"] <= T + pd.Timedelta(days=days))][["ds", "y"]]


@pytest.mark.parametrize("family", ["xgboost", "seasonal_naive"])
def test_without_actuals_the_fitted_forecast(small, family: str) -> None:
    cfg, train, _ = small
    model = make_forecaster(family, cfg).fit(train)
    stale = model.precompute()
    current = current_forecast(model, 1, H)
    assert current.origin == T and current.actuals_used == 0
    expected = stale[stale["sid"] == 1]["yhat"].to_numpy()
    np.testing.assert_allclose(current.forecast["yhat"].to_numpy(), expected)


def test_actuals_move_the_origin_and_only_new_lags_change_it(small) -> None:
    cfg, train, test = small
    model = make_forecaster("xgboost", cfg).fit(train)
    actuals = _actuals(test, 0, 7)
    moved = current_forecast(model, 0, H, actuals)
    assert moved.origin == T + pd.Timedelta(days=7) and moved.actuals_used == 7
    assert moved.forecast["ds"].iloc[0] == T + pd.Timedelta(days=8)
    # the stale forecast's dates get the same features (every lag >= the horizon) ...
    stale = model.precompute()
    both = moved.forecast.merge(stale[stale["sid"] == 0], on="ds", suffixes=("", "_stale"))
    assert len(both) == H - 7
    np.testing.assert_allclose(both["yhat"], both["yhat_stale"])
    # ... and an actual first moves the forecast exactly min(lags) periods after it: no leak
    bumped = actuals.copy()
    day3 = T + pd.Timedelta(days=3)
    bumped.loc[bumped["ds"] == day3, "y"] *= 3
    changed = current_forecast(model, 0, H, bumped).forecast
    differs = ~np.isclose(changed["yhat"], moved.forecast["yhat"])
    assert differs.any()
    assert changed["ds"][differs].min() == day3 + pd.Timedelta(days=cfg.min_lag)


def test_a_gap_holds_the_origin_back(small) -> None:
    cfg, train, test = small
    model = make_forecaster("xgboost", cfg).fit(train)
    actuals = _actuals(test, 0, 7)
    gappy = actuals[actuals["ds"] != T + pd.Timedelta(days=4)]
    got = current_forecast(model, 0, H, gappy)
    assert got.origin == T + pd.Timedelta(days=3)
    assert got.actuals_used == 3 and got.actuals_waiting == 3 and got.notes


def test_beyond_the_kept_extension_is_refused(small) -> None:
    cfg, train, test = small
    model = make_forecaster("xgboost", cfg.model_copy(update={"origin_extension": 2})).fit(train)
    with pytest.raises(OriginError, match="at most 23 periods"):
        current_forecast(model, 0, H, _actuals(test, 0, 7))
    with pytest.raises(OriginError, match="unknown regressor"):
        current_forecast(model, 0, H, None, {"price": [1.0]})


K = 14  # days of actuals after T


@pytest.mark.slow
@pytest.mark.parametrize("origin", ["2017-06-30", "2017-09-30"])
def test_current_origin_beats_the_stale_forecast(data_dir: Path, origin: str) -> None:
    """50 real series; target dates T+K+1..T+H: the stale forecast's steps K+1..H against the
    forecast from T+K (features recomputed + the declared ratio correction, pooled over the 50
    series, shrinkage 28)."""
    cfg = _config(50, 200)
    start = pd.Timestamp(origin)
    train, test = split_at(_panel(data_dir, cfg), start, H)
    model = make_forecaster("xgboost", cfg).fit(train)
    stale = model.precompute()
    known = test.frame[test.frame["ds"] <= start + pd.Timedelta(days=K)][["sid", "ds", "y"]]
    correction = ratio_correction(stale, known, window=28, shrinkage=28.0)
    parts = []
    for sid, acts in known.groupby("sid"):
        got = current_forecast(model, int(sid), H - K, acts[["ds", "y"]], None, correction)
        parts.append(got.forecast.assign(sid=sid))
    current = pd.concat(parts)
    truth = test.frame[test.frame["ds"] > start + pd.Timedelta(days=K)][["sid", "ds", "y"]]
    a = truth.merge(current, on=["sid", "ds"])
    b = truth.merge(stale, on=["sid", "ds"])
    assert len(a) == len(b) == 50 * (H - K)
    s_current, s_stale = (
        smape(a["y"].to_numpy(), a["yhat"].to_numpy()),
        smape(b["y"].to_numpy(), b["yhat"].to_numpy()),
    )
    print(f"origin {origin}: SMAPE stale {s_stale:.3f}, current origin {s_current:.3f}")
    assert s_current < s_stale
