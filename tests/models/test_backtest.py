"""Rolling origins, splits, interval calibration and forecast metrics (pure functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
from shelfwise.models.backtest import GATE_FOLD, backtest, gate_origin, rolling_origins
from shelfwise.models.forecast import Panel, calibrate_intervals, split_at
from shelfwise.models.forecast_metrics import (
    coverage,
    mase_scale,
    metrics_by_series,
    overall_metrics,
    smape,
)


def _panel(n_days=100, n_series=2):
    ds = pd.date_range("2021-01-01", periods=n_days, freq="D")
    frame = pd.concat(
        [
            pd.DataFrame({"sid": s, "store": s, "ds": ds, "y": np.arange(n_days, dtype=float)})
            for s in range(n_series)
        ],
        ignore_index=True,
    )
    return Panel(frame, ["store"], [], "D")


def test_rolling_origins_end_at_last_date_minus_horizon():
    p = _panel()
    origins = rolling_origins(p, horizon=10, folds=3, step=None)
    last = p.frame["ds"].max()
    assert origins == [last - pd.Timedelta(days=d) for d in (30, 20, 10)]
    assert rolling_origins(p, 10, 3, step=5)[0] == last - pd.Timedelta(days=20)


def test_gate_origin_is_the_champion_end_between_latest_origin_and_last_date():
    p = _panel()
    last = p.frame["ds"].max()

    def before(days: int) -> pd.Timestamp:
        return last - pd.Timedelta(days=days)

    # horizon 10: latest regular origin is last - 10; a champion trained up to last - 4 has
    # seen 6 days of that fold's holdout, the 4 days after its end are realised and unseen
    assert gate_origin(p, 10, 3, None, before(4)) == before(4)
    assert gate_origin(p, 10, 3, None, before(9)) == before(9)
    assert gate_origin(p, 10, 3, 5, before(1)) == before(1)
    # at or before the latest origin: the latest regular fold already serves the gate; at or
    # after the last date: nothing realised is unseen by the champion
    for end in (None, before(10), before(25), last, last + pd.Timedelta(days=3)):
        assert gate_origin(p, 10, 3, None, end) is None, end


def _naive_config(horizon: int, folds: int) -> ForecastConfig:
    raw = load_forecast_config("demand_forecast").model_dump()
    raw["horizon"] = horizon
    raw["backtest"].update(folds=folds, step=None)
    raw["seasonal_naive_periods"] = {"seasonal_naive_week": 7}
    return ForecastConfig.model_validate(raw)


def test_gate_fold_forecasts_only_the_realised_rows_after_its_origin():
    p = _panel(n_days=120, n_series=3)
    cfg = _naive_config(horizon=10, folds=3)
    last = p.frame["ds"].max()
    end = last - pd.Timedelta(days=4)
    include = ["seasonal_naive_week"]
    plain = backtest(p, cfg, include=include)
    result = backtest(p, cfg, include=include, gate_at=end)
    assert plain.gate is None and plain.gate_forecasts().equals(
        plain.forecasts[plain.forecasts["fold"] == plain.latest_fold]
    )
    # regular folds, hence the headline metrics, are untouched by the gate fold
    pd.testing.assert_frame_equal(result.forecasts, plain.forecasts)
    assert result.metrics("seasonal_naive_week") == plain.metrics("seasonal_naive_week")
    g = result.gate_forecasts()
    assert result.gate is not None and result.gate.origin == end
    assert (g["fold"] == GATE_FOLD).all() and (g["origin"] == end).all()
    expected = list(pd.date_range(end + pd.Timedelta(days=1), last, freq="D"))
    assert sorted(g["ds"].unique()) == expected
    assert g.groupby("sid").size().eq(4).all()
    # fitted on rows up to the origin only: weekly naive = the value 7 days earlier (y = day)
    assert np.allclose(g["y"] - g["yhat"], 7)
    # intervals from fold 1 (holdout ends last - 10 <= origin); fold 2 ends after the origin
    assert g["yhat_lower"].notna().all() and (g["yhat_lower"] <= g["yhat_upper"]).all()
    m = result.gate_fold_metrics("seasonal_naive_week")
    assert m["mae"] == pytest.approx(7.0)
    assert plain.gate_fold_metrics("seasonal_naive_week") is None
    assert result.seconds.keys() == plain.seconds.keys()  # naive families are not timed


def test_split_has_no_test_row_in_training():
    p = _panel()
    origin = p.frame["ds"].max() - pd.Timedelta(days=10)
    train, test = split_at(p, origin, 7)
    assert train.frame["ds"].max() == origin
    assert test.frame["ds"].min() == origin + pd.Timedelta(days=1)
    assert test.frame.groupby("sid").size().eq(7).all()


def test_smape_known_values():
    assert smape([100, 0], [110, 0]) == pytest.approx(100 * (20 / 210) / 2)
    assert smape([1, 2], [1, 2]) == 0
    assert smape([0], [5]) == pytest.approx(200)


def test_mase_scale_and_coverage():
    assert mase_scale(np.array([1.0, 3, 2, 6]), 1) == pytest.approx((2 + 1 + 4) / 3)
    assert coverage([1, 2, 3, 4], [0, 2.5, 2, 5], [2, 3, 4, 6]) == pytest.approx(0.5)
    assert np.isnan(coverage([1.0], [np.nan], [np.nan]))


def test_overall_and_per_series_metrics():
    f = pd.DataFrame(
        {
            "sid": [0, 0, 1, 1],
            "y": [10.0, 10, 20, 20],
            "yhat": [12.0, 8, 20, 22],
            "yhat_lower": [9.0, 9, 19, 21],
            "yhat_upper": [13.0, 13, 21, 23],
        }
    )
    scales = pd.Series({0: 2.0, 1: 1.0})
    per = metrics_by_series(f, scales).set_index("sid")
    assert per.loc[0, "mae"] == pytest.approx(2.0) and per.loc[0, "mase"] == pytest.approx(1.0)
    assert per.loc[1, "coverage"] == pytest.approx(0.5)
    overall = overall_metrics(f, scales)
    assert overall["mae"] == pytest.approx(1.5)
    assert overall["mase"] == pytest.approx((1.0 + 1.0) / 2)
    assert overall["rmse"] == pytest.approx(np.sqrt((4 + 4 + 0 + 4) / 4))


def test_interval_calibration_reaches_nominal_coverage_on_fresh_draws():
    rng = np.random.default_rng(0)
    sids = np.repeat(np.arange(50), 60)
    scale = 1 + sids % 5
    res = pd.DataFrame({"sid": sids, "yhat": 100.0, "y": 100 + rng.normal(0, scale)})
    cal = calibrate_intervals(res, level=0.8, min_per_series=10)
    fresh = 100 + rng.normal(0, scale)
    lo, hi = cal.bounds(sids, np.full(len(sids), 100.0))
    assert coverage(fresh, lo, hi) == pytest.approx(0.8, abs=0.03)
