"""The forecast gate's evaluation set from a gate fold, and the minimum of realised periods
(registry/forecast_gate.py; pure functions, no server)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shelfwise.models.backtest import GATE_FOLD, HYBRID, BacktestResult, GateFold
from shelfwise.registry import forecast_gate as fgate
from tests.registry.gate_helpers import without_baseline

E = pd.Timestamp("2017-06-30")  # the champion's data end
NAIVE = "seasonal_naive_week"


def _rows(origin: pd.Timestamp, days: int, n_series: int, fold: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ds = pd.date_range(origin + pd.Timedelta(days=1), periods=days, freq="D")
    parts = []
    for sid in range(n_series):
        y = 50 + 10 * rng.standard_normal(days)
        for fam, noise in ((HYBRID, 3.0), (NAIVE, 9.0)):
            parts.append(
                pd.DataFrame(
                    {
                        "fold": fold,
                        "origin": origin,
                        "family": fam,
                        "sid": sid,
                        "store": sid,
                        "ds": ds,
                        "y": y,
                        "yhat": y + noise * rng.standard_normal(days),
                        "yhat_lower": np.nan,
                        "yhat_upper": np.nan,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def _eval_set(days: int, n_series: int = 30, seed: int = 0) -> fgate.ForecastEvalSet:
    result = BacktestResult(
        _rows(E - pd.Timedelta(days=28), 28, n_series, 0, seed),
        {0: pd.Series(1.0, index=range(n_series))},
        gate=GateFold(
            E, _rows(E, days, n_series, GATE_FOLD, seed + 1), pd.Series(1.0, index=range(n_series))
        ),
    )
    return fgate.eval_set_from_frame(fgate.holdout_frame(result, ["store"]), ["store"])


def test_holdout_comes_from_the_gate_fold_and_the_champion_is_comparable_on_it():
    ev = _eval_set(days=14)
    assert ev.origin == E
    assert sorted(ev.frame["ds"].unique()) == list(
        pd.date_range(E + pd.Timedelta(days=1), E + pd.Timedelta(days=14))
    )
    assert {f"yhat.{HYBRID}", f"yhat.{NAIVE}"} <= set(ev.frame.columns)
    # champion trained up to E with a 28-day window: every gate row is comparable
    check, rows = fgate.comparable_rows(ev, str(E.date()), str((E + pd.Timedelta(days=28)).date()))
    assert check.passed and rows is not None and len(rows.frame) == len(ev.frame)
    # one day later and it has seen the first gate day: refused
    check, rows = fgate.comparable_rows(ev, "2017-07-01", "2017-07-29")
    assert not check.passed and rows is None


def test_too_few_realised_periods_are_refused_with_a_reason():
    rule = without_baseline("demand_forecast")
    assert rule.min_eval_periods == 7
    for days, promote in ((1, False), (6, False), (7, True)):
        ev = _eval_set(days=days)
        same = ev.forecasts(HYBRID)  # the champion forecasts exactly like the challenger
        comparable = fgate.Check("champion_comparable", True, "trained up to the origin")
        d = fgate.decide_forecast(rule, ev, same, "2", "1", comparable, fresher=True)
        checks = {c.name: c for c in d.checks}
        assert d.promote is promote, d.reasons
        assert checks["primary:smape"].passed  # non-inferior on every window length
        assert checks["eval_periods"].passed is promote
        if not promote:
            assert d.reasons == [checks["eval_periods"].detail]
            assert f"only {days} date(s)" in d.reasons[0] and "min_eval_periods" in d.reasons[0]
    # no minimum in the rule: one realised day is compared like any other window
    loose = rule.model_copy(update={"min_eval_periods": None})
    ev = _eval_set(days=1)
    d = fgate.decide_forecast(loose, ev, ev.forecasts(HYBRID), "2", "1", None, fresher=True)
    assert d.promote and "eval_periods" in {c.name for c in d.checks}


def test_first_version_needs_no_minimum_of_periods():
    rule = without_baseline("demand_forecast")
    ev = _eval_set(days=3)
    d = fgate.decide_forecast(rule, ev, None, "1", None, None)
    assert d.promote and "eval_periods" not in {c.name for c in d.checks}
