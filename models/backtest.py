"""Rolling-origin backtests of the hybrid and its baselines.

For each origin (the latest one at the panel's last date minus the horizon, earlier ones
``step`` periods apart) every family is fitted on rows up to the origin only and forecasts the
next ``horizon`` periods. Prophet alone comes from the hybrid's own Prophet fits (same models,
no second fit). Intervals of fold k are calibrated on that family's residuals of fold k - 1,
so the first fold has no intervals (coverage NaN) and later folds report honest coverage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from configs.forecast import ForecastConfig
from models.forecast import (
    BatchMapper,
    GlobalXGBoost,
    HybridProphetXGBoost,
    Panel,
    calibrate_intervals,
    seasonal_naive,
    split_at,
)
from models.forecast_metrics import mase_scales, metrics_by_series, overall_metrics

logger = logging.getLogger(__name__)

HYBRID, PROPHET, XGBOOST = "hybrid", "prophet", "xgboost"


def families(cfg: ForecastConfig) -> list[str]:
    return [HYBRID, PROPHET, XGBOOST, *cfg.seasonal_naive_periods]


def rolling_origins(panel: Panel, horizon: int, folds: int, step: int | None) -> list[pd.Timestamp]:
    """Origins, oldest first; the last leaves exactly ``horizon`` periods after it."""
    last = panel.frame["ds"].max()
    stride = (step or horizon) * panel.step
    latest = last - horizon * panel.step
    return [latest - (folds - 1 - i) * stride for i in range(folds)]


@dataclass
class BacktestResult:
    forecasts: pd.DataFrame  # fold, origin, family, sid, keys, ds, y, yhat, yhat_lower, yhat_upper
    scales: dict[int, pd.Series]  # fold -> MASE scale per sid (from that fold's training rows)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def latest_fold(self) -> int:
        return int(self.forecasts["fold"].max())

    def fold_metrics(self) -> pd.DataFrame:
        """One row per (family, fold) with the overall metrics."""
        rows = []
        for (fam, fold), g in self.forecasts.groupby(["family", "fold"], sort=True):
            rows.append({"family": fam, "fold": fold, **overall_metrics(g, self.scales[fold])})
        return pd.DataFrame(rows)

    def metrics(self, family: str, fold: int | None = None) -> dict[str, float]:
        fold = self.latest_fold if fold is None else fold
        g = self.forecasts[(self.forecasts["family"] == family) & (self.forecasts["fold"] == fold)]
        return overall_metrics(g, self.scales[fold])

    def series_metrics(self, fold: int | None = None) -> pd.DataFrame:
        """Per-series metrics of every family on one fold (default latest), wide by family."""
        fold = self.latest_fold if fold is None else fold
        f = self.forecasts[self.forecasts["fold"] == fold]
        parts = []
        for fam, g in f.groupby("family", sort=True):
            m = metrics_by_series(g, self.scales[fold]).set_index("sid")
            parts.append(m.add_prefix(f"{fam}."))
        return pd.concat(parts, axis=1).reset_index()

    def residuals(self, family: str, fold: int | None = None) -> pd.DataFrame:
        fold = self.latest_fold if fold is None else fold
        f = self.forecasts
        return f[(f["family"] == family) & (f["fold"] == fold)][["sid", "ds", "y", "yhat"]]


def _with_truth(pred: pd.DataFrame, test: Panel, fold: int, origin, family: str) -> pd.DataFrame:
    truth = test.frame[["sid", *test.key_columns, "ds", "y"]]
    out = truth.merge(pred[["sid", "ds", "yhat", "yhat_lower", "yhat_upper"]], on=["sid", "ds"])
    return out.assign(fold=fold, origin=origin, family=family)


def run_fold(
    panel: Panel,
    origin: pd.Timestamp,
    fold: int,
    cfg: ForecastConfig,
    include: Sequence[str],
    on_batch: Callable[[int, int, int], None] | None = None,
    map_batches: BatchMapper | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Fit every family in ``include`` on data up to ``origin``; forecasts for the next horizon.
    ``map_batches`` runs the hybrid's Prophet batches (default: a joblib pool)."""
    train, test = split_at(panel, origin, cfg.horizon)
    request = test.frame[["sid", *test.key_columns, "ds"]]
    future_regs = (
        test.frame[[*test.key_columns, "ds", *test.regressors]] if test.regressors else None
    )
    nan = np.full(len(request), np.nan)
    out, secs = [], {}
    if HYBRID in include or PROPHET in include:
        t0 = time.perf_counter()
        hybrid = HybridProphetXGBoost(cfg, on_batch, map_batches).fit(train, future_regs)
        secs[HYBRID] = time.perf_counter() - t0
        pred = hybrid.predict(request, components=True)
        if HYBRID in include:
            out.append(_with_truth(pred, test, fold, origin, HYBRID))
        if PROPHET in include:
            p = pred.assign(yhat=pred["p_yhat"], yhat_lower=nan, yhat_upper=nan)
            out.append(_with_truth(p, test, fold, origin, PROPHET))
    if XGBOOST in include:
        t0 = time.perf_counter()
        xgbm = GlobalXGBoost(cfg).fit(train, future_regs)
        secs[XGBOOST] = time.perf_counter() - t0
        pred = xgbm.predict(request, components=True)
        out.append(_with_truth(pred, test, fold, origin, XGBOOST))
    for name, period in cfg.seasonal_naive_periods.items():
        if name in include:
            p = seasonal_naive(train, request, period).assign(yhat_lower=nan, yhat_upper=nan)
            out.append(_with_truth(p, test, fold, origin, name))
    return pd.concat(out, ignore_index=True), secs


def _apply_calibration(forecasts: pd.DataFrame, cfg: ForecastConfig) -> pd.DataFrame:
    """Intervals of fold k from the same family's residuals on fold k - 1."""
    out = forecasts.copy()
    for fam in out["family"].unique():
        for fold in sorted(out["fold"].unique())[1:]:
            prev = out[(out["family"] == fam) & (out["fold"] == fold - 1)]
            cal = calibrate_intervals(
                prev[["sid", "y", "yhat"]],
                cfg.intervals.level,
                cfg.intervals.min_residuals_per_series,
            )
            m = (out["family"] == fam) & (out["fold"] == fold)
            lo, hi = cal.bounds(out.loc[m, "sid"].to_numpy(), out.loc[m, "yhat"].to_numpy())
            out.loc[m, "yhat_lower"], out.loc[m, "yhat_upper"] = lo, hi
    return out


def backtest(
    panel: Panel,
    cfg: ForecastConfig,
    include: Sequence[str] | None = None,
    on_fold: Callable[[int, int, pd.Timestamp], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    map_batches: BatchMapper | None = None,
) -> BacktestResult:
    """Rolling-origin backtest of ``include`` (default: the hybrid and every baseline)."""
    include = list(include or families(cfg))
    origins = rolling_origins(panel, cfg.horizon, cfg.backtest.folds, cfg.backtest.step)
    parts, scales, seconds = [], {}, {}
    for i, origin in enumerate(origins):
        logger.info("backtest fold %s/%s: origin %s", i + 1, len(origins), origin.date())
        if on_fold:
            on_fold(i, len(origins), origin)
        train = panel.frame[panel.frame["ds"] <= origin]
        scales[i] = mase_scales(train, cfg.mase_period)
        fc, secs = run_fold(panel, origin, i, cfg, include, on_batch, map_batches)
        parts.append(fc)
        for k, v in secs.items():
            seconds[f"fold{i}.{k}"] = v
    forecasts = _apply_calibration(pd.concat(parts, ignore_index=True), cfg)
    return BacktestResult(forecasts, scales, seconds)
