"""Stock risk (monitoring/alerts.py) against a Monte Carlo simulation of the forecast
distribution, and the alert table's statuses on SQLite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from shelfwise.configs.actuals import InventorySettings
from shelfwise.monitoring.alerts import AlertStore, stock_risk

LEVEL = 0.9
SETTINGS = InventorySettings(lead_time=10, service_level=0.95, alert_probability=0.2)


def _forecast(mean: np.ndarray, sd: np.ndarray) -> pd.DataFrame:
    z = norm.ppf(0.5 + LEVEL / 2)
    return pd.DataFrame(
        {
            "date": pd.date_range("2018-01-01", periods=len(mean), freq="D"),
            "yhat": mean,
            "yhat_lower": mean - z * sd,
            "yhat_upper": mean + z * sd,
        }
    )


@pytest.mark.parametrize("on_hand", [35.0, 47.0, 80.0])
def test_expected_stockout_day_matches_the_simulated_median(on_hand: float) -> None:
    rng = np.random.default_rng(0)
    mean = np.linspace(8.0, 12.0, 10)
    sd = np.full(10, 3.0)
    risk = stock_risk(_forecast(mean, sd), on_hand, LEVEL, SETTINGS, {"store": 1}, "3")
    draws = rng.normal(mean, sd, size=(20_000, 10)).cumsum(axis=1)
    out = draws > on_hand
    day = np.where(out.any(axis=1), out.argmax(axis=1) + 1, 99)  # 99: no stockout in lead time
    assert risk.probability == pytest.approx(out[:, -1].mean(), abs=0.02)
    median = float(np.median(day))
    assert risk.periods_to_stockout is not None
    assert abs(risk.periods_to_stockout - median) <= 1
    assert risk.expected_stockout == pd.Timestamp("2018-01-01").date() + pd.Timedelta(
        days=risk.periods_to_stockout - 1
    )
    assert risk.shortfall == pytest.approx(max(0.0, mean.sum() - on_hand))


def test_no_stockout_within_the_lead_time() -> None:
    fc = _forecast(np.full(10, 5.0), np.full(10, 1.0))
    risk = stock_risk(fc, 500.0, LEVEL, SETTINGS, {}, "1")
    assert risk.expected_stockout is None and not risk.alert and risk.shortfall == 0.0


def test_alert_statuses(tmp_path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 's.db'}")
    fc = _forecast(np.full(10, 10.0), np.full(10, 2.0))
    at_risk = stock_risk(fc, 20.0, LEVEL, SETTINGS, {"store": 1}, "4")
    assert at_risk.alert and at_risk.severity == "critical"
    (first,) = store.record("t", [at_risk], ["store"])
    assert first["status"] == "new"
    assert store.set_status("t", first["id"], "acknowledged")
    (again,) = store.record("t", [at_risk], ["store"])
    assert again["id"] == first["id"] and again["status"] == "acknowledged"
    safe = stock_risk(fc, 1000.0, LEVEL, SETTINGS, {"store": 1}, "4")
    assert store.record("t", [safe], ["store"]) == []
    (resolved,) = store.alerts("t", ["resolved"])
    assert resolved["id"] == first["id"] and resolved["series"] == {"store": 1}
    assert store.alerts("t") == []
