"""The forecast retrain policy and the series bootstrap (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.monitoring_forecast import ForecastRetrainPolicy
from shelfwise.monitoring.forecast_policy import (
    ForecastEvidence,
    decide_forecast_retrain,
    forecast_findings,
    window_share,
)
from shelfwise.monitoring.policy import LastRetrain
from shelfwise.registry.gate import paired_bootstrap

NOW = datetime(2017, 10, 1, tzinfo=UTC)


def _ev(smape=14.0, scored=450, realised="2017-07-28", gate=14.7) -> ForecastEvidence:
    return ForecastEvidence(
        model_version="1",
        data_end="2017-06-30",
        window_end="2017-09-28",
        actual_rows=scored,
        scored_rows=scored,
        beyond_window_rows=0,
        realised_to=realised,
        window_realised_share=window_share("2017-06-30", "2017-09-28", realised),
        performance={"smape": smape, "mae": 5.0},
        gate_smape=gate,
    )


def test_window_share():
    assert window_share("2017-06-30", "2017-09-28", "2017-07-28") == pytest.approx(28 / 90)
    assert window_share("2017-06-30", "2017-09-28", "2017-12-31") == 1.0
    assert window_share("2017-06-30", "2017-09-28", None) == 0.0


def test_sound_forecasts_inside_the_window_keep_the_model():
    d = decide_forecast_retrain(_ev(), ForecastRetrainPolicy(), None, NOW)
    assert not d.retrain and d.reasons == ["no rule broken"]


def test_drop_floor_and_window_rules_fire():
    policy = ForecastRetrainPolicy()
    reasons = [r for _, r in forecast_findings(_ev(smape=20.0), policy)]
    assert len(reasons) == 1 and "5.300 points worse" in reasons[0]
    assert any("beyond floor" in r for _, r in forecast_findings(_ev(smape=45.0), policy))
    assert not forecast_findings(_ev(smape=45.0, scored=50), policy)  # too few rows
    found = forecast_findings(_ev(realised="2017-09-28"), policy)
    assert [t for t, _ in found] == ["feedback"] and "100%" in found[0][1]


def test_one_retrain_per_incident():
    ev = _ev(realised="2017-09-28")
    last = LastRetrain(NOW - timedelta(days=1), "1", "feedback")
    d = decide_forecast_retrain(ev, ForecastRetrainPolicy(), last, NOW)
    assert not d.retrain and d.suppressed


def test_series_bootstrap_resamples_whole_series():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), 90)
    y = rng.uniform(10, 50, len(groups))
    a = y * rng.uniform(0.8, 1.2, len(y))
    b = np.where(groups == 0, y, a)  # the challenger is better on one series of five only
    by_series = paired_bootstrap(y, a, b, "smape", False, 500, 1, 0.95, groups=groups)
    by_row = paired_bootstrap(y, a, b, "smape", False, 500, 1, 0.95)
    assert by_series.improvement == pytest.approx(by_row.improvement) and by_series.improvement > 0
    # the gain lives in one series: resampling series (not rows) shows how fragile it is
    assert by_series.high - by_series.low > 2 * (by_row.high - by_row.low)
    assert by_series.low <= 0 < by_row.low
    same = paired_bootstrap(y, a, a, "smape", False, 200, 1, 0.95, groups=groups)
    assert same.low == same.high == 0


def test_cut_and_extend_actuals_win():
    from shelfwise.configs.datasets import load_timeseries_spec
    from shelfwise.models.datasets import cut_and_extend

    spec = load_timeseries_spec("store_item_demand")
    ds = pd.date_range("2017-06-28", periods=5)
    df = pd.DataFrame({"date": ds, "store": 1, "item": 1, "sales": [1.0, 2, 3, 4, 5]})
    act = pd.DataFrame({"date": ds[3:], "store": 1, "item": 1, "sales": [40.0, 50]})
    out = cut_and_extend(df, spec, pd.Timestamp("2017-06-30"), act)
    assert list(out["sales"]) == [1.0, 2, 3, 40, 50]
