"""Inventory maths on top of a demand forecast: stockout probability over a lead time, safety
stock and reorder point for a target service level (cycle service level, normal demand).

Daily demand over the lead time is taken from the forecast: a mean and a standard deviation per
period (``sd_from_interval`` turns a forecast's [yhat_lower, yhat_upper] into a standard
deviation). Period errors are treated as independent, so lead-time demand is normal with mean
sum(mu) and variance sum(sigma^2). With constant mu and sigma this is the textbook
SS = z * sigma * sqrt(L), ROP = mu * L + SS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class InventoryPlan:
    lead_time: int
    service_level: float
    lead_time_demand_mean: float
    lead_time_demand_sd: float
    safety_stock: float
    reorder_point: float
    stockout_probability: float  # with the given on-hand stock, over the lead time
    on_hand: float


def _check(mean: np.ndarray, sd: np.ndarray, lead_time: int) -> None:
    if lead_time < 1:
        raise ValueError(f"lead_time must be >= 1 period, got {lead_time}")
    if len(mean) < lead_time or len(sd) < lead_time:
        raise ValueError(
            f"forecast covers {min(len(mean), len(sd))} periods, lead time needs {lead_time}"
        )
    if np.any(sd[:lead_time] < 0) or np.any(~np.isfinite(sd[:lead_time])):
        raise ValueError("forecast standard deviations must be finite and >= 0")


def sd_from_interval(lower: np.ndarray, upper: np.ndarray, level: float) -> np.ndarray:
    """Standard deviation of a normal whose central ``level`` interval is [lower, upper]."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    z = norm.ppf(0.5 + level / 2)
    return (np.asarray(upper, dtype=float) - np.asarray(lower, dtype=float)) / (2 * z)


def lead_time_demand(mean: np.ndarray, sd: np.ndarray, lead_time: int) -> tuple[float, float]:
    """(mean, sd) of total demand over the first ``lead_time`` periods."""
    mean, sd = np.asarray(mean, dtype=float), np.asarray(sd, dtype=float)
    _check(mean, sd, lead_time)
    return float(mean[:lead_time].sum()), float(math.sqrt(np.sum(sd[:lead_time] ** 2)))


def safety_stock(sd_lead_time: float, service_level: float) -> float:
    if not 0 < service_level < 1:
        raise ValueError(f"service_level must be in (0, 1), got {service_level}")
    return float(norm.ppf(service_level) * sd_lead_time)


def stockout_probability(on_hand: float, mean_lt: float, sd_lt: float) -> float:
    """P(lead-time demand > on_hand)."""
    if sd_lt == 0:
        return float(mean_lt > on_hand)
    return float(norm.sf(on_hand, loc=mean_lt, scale=sd_lt))


def plan(
    mean: np.ndarray, sd: np.ndarray, lead_time: int, service_level: float, on_hand: float = 0.0
) -> InventoryPlan:
    """Safety stock and reorder point for ``service_level``; stockout probability at ``on_hand``."""
    mu, sigma = lead_time_demand(mean, sd, lead_time)
    ss = safety_stock(sigma, service_level)
    return InventoryPlan(
        lead_time=lead_time,
        service_level=service_level,
        lead_time_demand_mean=mu,
        lead_time_demand_sd=sigma,
        safety_stock=ss,
        reorder_point=mu + ss,
        stockout_probability=stockout_probability(on_hand, mu, sigma),
        on_hand=on_hand,
    )


def simulate_stockout_probability(
    mean: np.ndarray,
    sd: np.ndarray,
    lead_time: int,
    on_hand: float,
    n: int = 200_000,
    seed: int = 0,
) -> float:
    """Monte Carlo check: draw daily demand per period, count lead times that exceed on_hand."""
    mean, sd = np.asarray(mean, dtype=float), np.asarray(sd, dtype=float)
    _check(mean, sd, lead_time)
    rng = np.random.default_rng(seed)
    draws = rng.normal(mean[:lead_time], sd[:lead_time], size=(n, lead_time)).sum(axis=1)
    return float(np.mean(draws > on_hand))
