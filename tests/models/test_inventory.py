"""Inventory maths against the textbook normal formula and a Monte Carlo simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from shelfwise.models.inventory import (
    lead_time_demand,
    plan,
    sd_from_interval,
    simulate_stockout_probability,
)


@pytest.mark.parametrize(
    ("mu", "sigma", "lead", "sl"), [(40.0, 8.0, 5, 0.95), (12.0, 4.5, 14, 0.99), (100, 30, 1, 0.9)]
)
def test_constant_demand_matches_textbook_formula(mu, sigma, lead, sl):
    p = plan(np.full(30, mu), np.full(30, sigma), lead, sl)
    z = norm.ppf(sl)
    assert p.safety_stock == pytest.approx(z * sigma * math.sqrt(lead))
    assert p.reorder_point == pytest.approx(mu * lead + z * sigma * math.sqrt(lead))
    # holding exactly the reorder point leaves a stockout risk of 1 - service level
    at_rop = plan(np.full(30, mu), np.full(30, sigma), lead, sl, on_hand=p.reorder_point)
    assert at_rop.stockout_probability == pytest.approx(1 - sl)


def test_stockout_probability_matches_simulation_for_varying_forecast():
    rng = np.random.default_rng(3)
    mean = rng.uniform(20, 60, size=28)
    sd = rng.uniform(3, 12, size=28)
    for on_hand in (250.0, 300.0, 340.0):
        analytic = plan(mean, sd, 7, 0.95, on_hand).stockout_probability
        simulated = simulate_stockout_probability(mean, sd, 7, on_hand, n=200_000, seed=1)
        assert simulated == pytest.approx(analytic, abs=0.005)


def test_simulated_service_level_at_reorder_point():
    mean, sd = np.full(10, 50.0), np.full(10, 10.0)
    p = plan(mean, sd, 10, 0.97)
    sim = simulate_stockout_probability(mean, sd, 10, p.reorder_point, n=400_000, seed=2)
    assert sim == pytest.approx(0.03, abs=0.002)


def test_sd_from_interval_inverts_a_normal_interval():
    lo, hi = norm.interval(0.9, loc=30, scale=6)
    assert sd_from_interval(np.array([lo]), np.array([hi]), 0.9)[0] == pytest.approx(6)


def test_lead_time_demand_sums_means_and_variances():
    mu, sd = lead_time_demand(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 0, 0]), 3)
    assert (mu, sd) == (pytest.approx(6.0), pytest.approx(5.0))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="lead time needs 10"):
        plan(np.ones(5), np.ones(5), 10, 0.9)
    with pytest.raises(ValueError, match="service_level"):
        plan(np.ones(5), np.ones(5), 2, 1.0)
    with pytest.raises(ValueError, match="lead_time"):
        plan(np.ones(5), np.ones(5), 0, 0.9)
