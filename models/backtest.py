"""Rolling-origin backtests of the hybrid and its baselines.

For each origin (the latest one at the panel's last date minus the horizon, earlier ones
``step`` periods apart) every family is fitted on rows up to the origin only and forecasts the
next ``horizon`` periods. Prophet alone comes from the hybrid's own Prophet fits (same models,
no second fit). Intervals of fold k are calibrated on that family's residuals of fold k - 1,
so the first fold has no intervals (coverage NaN) and later folds report honest coverage.

The gate fold. A frequent retrain (champion trained up to ``E``, this panel up to ``E + k`` with
``k < horizon``) puts the latest origin before ``E``: the champion has seen part of that fold's
holdout, so the promotion gate cannot score it there. ``gate_origin`` then returns ``E`` and
``backtest`` adds one more fold at exactly that origin: every family fitted on rows up to ``E``,
forecasting the realised rows ``(E, last date]`` that neither the champion nor that fold saw.
It is kept apart from the regular folds (``BacktestResult.gate``): headline metrics stay those
of the latest regular fold; the gate fold's holdout becomes the gate's evaluation set. Its
intervals come from the latest regular fold whose holdout ended by ``E`` (none: coverage NaN).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shelfwise.configs.forecast import ForecastConfig
from shelfwise.models.forecast import (
    BatchMapper,
    GlobalXGBoost,
    HybridProphetXGBoost,
    Panel,
    calibrate_intervals,
    make_forecaster,
    periods_between,
    seasonal_naive,
    split_at,
)
from shelfwise.models.forecast_metrics import mase_scales, metrics_by_series, overall_metrics

logger = logging.getLogger(__name__)

HYBRID, PROPHET, XGBOOST = "hybrid", "prophet", "xgboost"
SEASONAL_NAIVE, LEVEL = "seasonal_naive", "level"
FALLBACK = "fallback"  # the declared fallback forecaster, backtested for its intervals
DEFAULT_CANDIDATES = [SEASONAL_NAIVE, PROPHET, XGBOOST, HYBRID]


def candidate_families(cfg: ForecastConfig) -> list[str]:
    """The families that compete for the registered version (the task's candidates)."""
    return list(cfg.candidates or DEFAULT_CANDIDATES)


def families(cfg: ForecastConfig) -> list[str]:
    """Everything a backtest scores: the candidates, the seasonal naive (the gate's naive
    baseline, scored even when it does not compete), the reference seasonal naives of
    ``seasonal_naive_periods`` (reported, never selected) and, with ``data.short_series:
    fallback``, the fallback forecaster (its residuals calibrate the short series' intervals)."""
    out = [*candidate_families(cfg), SEASONAL_NAIVE, *cfg.seasonal_naive_periods]
    if cfg.data.short_series == "fallback":
        out.append(FALLBACK)
    return list(dict.fromkeys(out))


def rolling_origins(panel: Panel, horizon: int, folds: int, step: int | None) -> list[pd.Timestamp]:
    """Origins, oldest first; the last leaves exactly ``horizon`` periods after it."""
    last = panel.frame["ds"].max()
    stride = (step or horizon) * panel.step
    latest = last - horizon * panel.step
    return [latest - (folds - 1 - i) * stride for i in range(folds)]


def gate_origin(
    panel: Panel, horizon: int, folds: int, step: int | None, champion_end: pd.Timestamp | None
) -> pd.Timestamp | None:
    """The gate fold's origin: the champion's data end ``E`` when it lies after the latest
    regular origin and before the panel's last date (the champion saw part of the latest fold's
    holdout, while ``(E, last]`` is realised and unseen by it); otherwise None (no gate fold:
    the latest regular fold serves the gate, or nothing realised is unseen by the champion)."""
    if champion_end is None:
        return None
    end = pd.Timestamp(champion_end)
    latest = rolling_origins(panel, horizon, folds, step)[-1]
    return end if latest < end < panel.frame["ds"].max() else None


GATE_FOLD = -1  # the ``fold`` value of the gate fold's rows


@dataclass(frozen=True)
class GateFold:
    """The extra fold at the champion's data end: same columns as the regular folds' forecasts
    (``fold`` = GATE_FOLD), restricted to the realised rows after ``origin``."""

    origin: pd.Timestamp
    forecasts: pd.DataFrame
    scale: pd.Series  # MASE scale per sid from the rows up to ``origin``


@dataclass
class BacktestResult:
    forecasts: pd.DataFrame  # fold, origin, family, sid, keys, ds, y, yhat, yhat_lower, yhat_upper
    scales: dict[int, pd.Series]  # fold -> MASE scale per sid (from that fold's training rows)
    seconds: dict[str, float] = field(default_factory=dict)
    gate: GateFold | None = None  # the gate fold, when the champion's data end called for one

    @property
    def latest_fold(self) -> int:
        return int(self.forecasts["fold"].max())

    def gate_forecasts(self) -> pd.DataFrame:
        """The rows the promotion gate scores: the gate fold when there is one, else the
        latest regular fold."""
        if self.gate is not None:
            return self.gate.forecasts
        return self.forecasts[self.forecasts["fold"] == self.latest_fold]

    def gate_fold_metrics(self, family: str) -> dict[str, float] | None:
        """Overall metrics of ``family`` on the gate fold (None without one)."""
        if self.gate is None:
            return None
        g = self.gate.forecasts[self.gate.forecasts["family"] == family]
        return overall_metrics(g, self.gate.scale)

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
        """Out-of-sample rows (sid, ds, y, yhat, step) of ``family`` on ``fold``; None: every
        regular fold (what a registered version's intervals are calibrated on)."""
        f = self.forecasts
        rows = (
            f[f["family"] == family]
            if fold is None
            else f[(f["family"] == family) & (f["fold"] == fold)]
        )
        return rows[["sid", "ds", "y", "yhat", "step"]]

    def mean_metric(self, family: str, metric: str) -> float:
        """Mean over the regular folds of ``family``'s ``metric`` (NaN folds left out)."""
        fm = self.fold_metrics()
        vals = fm.loc[fm["family"] == family, metric].dropna()
        return float(vals.mean()) if len(vals) else float("nan")


def _with_truth(pred: pd.DataFrame, test: Panel, fold: int, origin, family: str) -> pd.DataFrame:
    truth = test.frame[["sid", *test.key_columns, "ds", "y"]]
    out = truth.merge(pred[["sid", "ds", "yhat", "yhat_lower", "yhat_upper"]], on=["sid", "ds"])
    step = periods_between(pd.Timestamp(origin), out["ds"].to_numpy(), test.frequency)
    return out.assign(fold=fold, origin=origin, family=family, step=step)


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
    simple = [(f, f) for f in (SEASONAL_NAIVE, LEVEL) if f in include]
    if FALLBACK in include:
        simple.append((FALLBACK, cfg.data.fallback))
    for name, family in simple:
        t0 = time.perf_counter()
        model = make_forecaster(family, cfg).fit(train, future_regs)
        secs[name] = time.perf_counter() - t0
        pred = model.predict(request, components=True)
        out.append(_with_truth(pred, test, fold, origin, name))
    for name, period in cfg.seasonal_naive_periods.items():
        if name in include:
            p = seasonal_naive(train, request, period).assign(yhat_lower=nan, yhat_upper=nan)
            out.append(_with_truth(p, test, fold, origin, name))
    return pd.concat(out, ignore_index=True), secs


def _calibrate_from(
    target: pd.DataFrame, source: pd.DataFrame, fold: int, cfg: ForecastConfig
) -> pd.DataFrame:
    """Intervals of every family in ``target`` from the same family's out-of-sample residuals
    on the regular folds ``<= fold`` of ``source`` (split conformal: the residuals were known
    before ``target``'s origin)."""
    out = target.copy()
    for fam in out["family"].unique():
        prev = source[(source["family"] == fam) & (source["fold"] <= fold)]
        cal = calibrate_family(prev, cfg)
        m = out["family"] == fam
        lo, hi = cal.bounds(
            out.loc[m, "sid"].to_numpy(), out.loc[m, "yhat"].to_numpy(), out.loc[m, "step"]
        )
        out.loc[m, "yhat_lower"], out.loc[m, "yhat_upper"] = lo, hi
    return out


def calibrate_family(residuals: pd.DataFrame, cfg: ForecastConfig):
    """Conformal calibration from out-of-sample rows (sid, y, yhat, step)."""
    iv = cfg.intervals
    return calibrate_intervals(
        residuals[["sid", "y", "yhat", "step"]],
        iv.level,
        iv.min_residuals_per_series,
        cfg.horizon,
        iv.horizon_buckets,
    )


def _apply_calibration(forecasts: pd.DataFrame, cfg: ForecastConfig) -> pd.DataFrame:
    """Intervals of fold k from the same family's residuals on folds 0 .. k - 1."""
    parts = [forecasts[forecasts["fold"] == 0]]
    for fold in sorted(forecasts["fold"].unique())[1:]:
        fold_rows = forecasts[forecasts["fold"] == fold]
        parts.append(_calibrate_from(fold_rows, forecasts, fold - 1, cfg))
    return pd.concat(parts).loc[forecasts.index]


def _calibration_fold(
    forecasts: pd.DataFrame, origin: pd.Timestamp, span: pd.Timedelta
) -> int | None:
    """The latest regular fold whose holdout ended by ``origin`` (its residuals are known
    then), or None."""
    ends = forecasts.groupby("fold")["origin"].first() + span
    done = ends[ends <= origin]
    return int(done.index.max()) if len(done) else None


def backtest(
    panel: Panel,
    cfg: ForecastConfig,
    include: Sequence[str] | None = None,
    on_fold: Callable[[int, int, pd.Timestamp], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    gate_at: pd.Timestamp | None = None,
    map_batches: BatchMapper | None = None,
) -> BacktestResult:
    """Rolling-origin backtest of ``include`` (default: the hybrid and every baseline);
    ``gate_at`` (from ``gate_origin``) adds the gate fold at that origin."""
    include = list(include or families(cfg))
    panel = panel.main_part()  # short series have no history to backtest (the fallback's)
    origins = rolling_origins(panel, cfg.horizon, cfg.backtest.folds, cfg.backtest.step)
    parts, scales, seconds = [], {}, {}
    for i, origin in enumerate(origins):
        logger.info("backtest fold %s/%s: origin %s", i + 1, len(origins), origin.date())
        if on_fold:
            on_fold(i, len(origins), origin)
        train = panel.frame[panel.frame["ds"] <= origin]
        scales[i] = mase_scales(train, cfg.mase_period_for(panel.frequency))
        fc, secs = run_fold(panel, origin, i, cfg, include, on_batch, map_batches)
        parts.append(fc)
        for k, v in secs.items():
            seconds[f"fold{i}.{k}"] = v
    forecasts = _apply_calibration(pd.concat(parts, ignore_index=True), cfg)
    gate = None
    if gate_at is not None:
        logger.info("gate fold: origin %s (the champion's data end)", gate_at.date())
        fc, secs = run_fold(panel, gate_at, GATE_FOLD, cfg, include, on_batch, map_batches)
        cal = _calibration_fold(forecasts, gate_at, cfg.horizon * panel.step)
        fc = _calibrate_from(fc, forecasts, cal, cfg) if cal is not None else fc
        train = panel.frame[panel.frame["ds"] <= gate_at]
        gate = GateFold(gate_at, fc, mase_scales(train, cfg.mase_period_for(panel.frequency)))
        for k, v in secs.items():
            seconds[f"gate_fold.{k}"] = v
    return BacktestResult(forecasts, scales, seconds, gate)
