"""Demand forecasting over many series: ``HybridProphetXGBoost`` and its baselines.

The hybrid fits one Prophet per series (trend, seasonalities, holidays, regressors; MAP, no
uncertainty sampling) and one global XGBoost on Prophet's residuals. The residual model sees
calendar features, series keys, Prophet's components and lag/rolling features whose lags are all
>= the horizon, so a forecast row never reads a value after its forecast origin.

Prophet models are not kept after fitting: the fit computes Prophet's components for the
``horizon`` periods after each series' last date, so the fitted object is small, loads fast and
serves any request inside that window (the pyfunc wraps exactly this object).

Prediction intervals come from out-of-sample residuals (``calibrate``): per-series scale (mean
absolute error) times pooled quantiles of the scaled residuals.

Panel format used throughout: one row per (series, period) on a regular grid with columns
``sid`` (int series id), the spec's key columns, ``ds`` (timestamp), ``y`` and the regressors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np
import pandas as pd

from shelfwise.configs.datasets import SEASON_LENGTHS, TimeSeriesDatasetSpec
from shelfwise.configs.forecast import ForecastConfig, ProphetSettings
from shelfwise.models.datasets import DatasetError

logger = logging.getLogger(__name__)

PROPHET_COMPONENTS = (
    "weekly",
    "yearly",
    "holidays",
    "extra_regressors_additive",
    "extra_regressors_multiplicative",
)
ProgressFn = Callable[[int, int, int], None]  # (batch index, batches, series done)


# --------------------------------------------------------------------------- panel preparation


@dataclass
class Panel:
    """Validated series on a regular grid (see module docstring for the columns)."""

    frame: pd.DataFrame
    key_columns: list[str]
    regressors: list[str]
    frequency: str  # "H", "D", "W" or "M" (monthly dates are month starts)
    skipped: list[dict] = field(default_factory=list)
    short: list[int] = field(default_factory=list)  # sids too short for the main model

    @property
    def seasons(self) -> tuple[int, ...]:
        return SEASON_LENGTHS[self.frequency]

    def main_part(self) -> Panel:
        """The series long enough for the main model (all unless ``data.short_series`` is
        ``fallback`` and some are short)."""
        if not self.short:
            return self
        return self.subset(~self.frame["sid"].isin(self.short)).with_short([])

    def short_part(self) -> Panel | None:
        """The short series (forecast by the fallback), or None."""
        if not self.short:
            return None
        return self.subset(self.frame["sid"].isin(self.short))

    def with_short(self, short: list[int]) -> Panel:
        return Panel(
            self.frame, self.key_columns, self.regressors, self.frequency, self.skipped, short
        )

    @property
    def step(self) -> pd.Timedelta:
        return period_step(self.frequency)

    @property
    def keys(self) -> pd.DataFrame:
        return (
            self.frame[["sid", *self.key_columns]]
            .drop_duplicates("sid")
            .sort_values("sid")
            .reset_index(drop=True)
        )

    @property
    def n_series(self) -> int:
        return int(self.frame["sid"].nunique())

    def subset(self, mask: pd.Series) -> Panel:
        return Panel(
            self.frame[mask].reset_index(drop=True),
            self.key_columns,
            self.regressors,
            self.frequency,
            self.skipped,
            self.short,
        )

    def with_frame(self, frame: pd.DataFrame) -> Panel:
        return Panel(
            frame, self.key_columns, self.regressors, self.frequency, self.skipped, self.short
        )


def period_step(frequency: str) -> pd.Timedelta | pd.DateOffset:
    """One period: an hour, a day, a week (7 days, any weekday), or a month (month starts)."""
    if frequency == "M":
        return pd.offsets.MonthBegin(1)
    return {"H": pd.Timedelta(hours=1), "D": pd.Timedelta(days=1), "W": pd.Timedelta(days=7)}[
        frequency
    ]


def periods_between(start, end, frequency: str) -> np.ndarray:
    """Whole periods from ``start`` to ``end`` (arrays or scalars of timestamps on the grid)."""
    a, b = pd.DatetimeIndex(np.atleast_1d(start)), pd.DatetimeIndex(np.atleast_1d(end))
    if len(a) == 1 and len(b) != 1:
        a = pd.DatetimeIndex(np.repeat(a.to_numpy(), len(b)))
    if frequency == "M":
        return np.asarray((b.year - a.year) * 12 + (b.month - a.month), dtype=int)
    step = period_step(frequency)
    return np.asarray(np.round((b - a) / step), dtype=int)


def shift_periods(ds, n, frequency: str) -> np.ndarray:
    """``ds`` moved by ``n`` periods (both arrays, or broadcastable)."""
    d = pd.DatetimeIndex(np.atleast_1d(ds))
    n = np.asarray(n, dtype=int)
    if frequency == "M":
        months = d.year.to_numpy() * 12 + d.month.to_numpy() - 1 + n
        return pd.to_datetime(
            pd.DataFrame({"year": months // 12, "month": months % 12 + 1, "day": 1})
        ).to_numpy()
    return (
        d + pd.to_timedelta(n * (period_step(frequency) / pd.Timedelta(1, "ns")), "ns")
    ).to_numpy()


def future_dates(last: pd.Timestamp, periods: int, frequency: str) -> pd.DatetimeIndex:
    step = period_step(frequency)
    return pd.date_range(pd.Timestamp(last) + step, periods=periods, freq=step)


def _step_label(frequency: str) -> str:
    return {"H": "1 hour", "D": "1 day", "W": "7 days", "M": "1 month (month starts)"}[frequency]


def _key_label(row: pd.Series | dict, key_columns: Sequence[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in key_columns)


def prepare_panel(df: pd.DataFrame, spec: TimeSeriesDatasetSpec, cfg: ForecastConfig) -> Panel:
    """Validated frame (see ``models.datasets.validate_timeseries``) -> regular-grid Panel.

    Gaps (missing periods inside a series) are an error or filled per ``cfg.data.gaps``; series
    shorter than ``cfg.min_history`` periods are an error or skipped per ``cfg.data.short_series``;
    both handlings are logged.
    """
    keys = list(spec.series_keys)
    out = df[[*keys, spec.time_column, spec.target, *spec.regressors]].rename(
        columns={spec.time_column: "ds", spec.target: "y"}
    )
    if spec.frequency == "M":  # any day of the month -> its month start
        out["ds"] = pd.DatetimeIndex(out["ds"]).to_period("M").to_timestamp()
    out = out.sort_values([*keys, "ds"]).reset_index(drop=True)
    key_table = out[keys].drop_duplicates().reset_index(drop=True)
    if cfg.data.max_series is not None and len(key_table) > cfg.data.max_series:
        key_table = key_table.head(cfg.data.max_series)
        out = out.merge(key_table, on=keys, how="inner")
        logger.info("kept the first %s series (data.max_series)", cfg.data.max_series)
    key_table["sid"] = np.arange(len(key_table))
    out = out.merge(key_table, on=keys, how="left")
    step = period_step(spec.frequency)
    parts: list[pd.DataFrame] = []
    skipped: list[dict] = []
    short_old: set[int] = set()
    policy = cfg.data.short_series
    for _, g in out.groupby("sid", sort=True):
        g = g.reset_index(drop=True)
        label = _key_label(g.iloc[0], keys)
        g = _regularise(g, step, spec.frequency, cfg.data.gaps, label, keys)
        if len(g) < cfg.min_history:
            msg = (
                f"series ({label}) has {len(g)} periods; at least {cfg.min_history} are needed "
                f"(max lag + level window + 2 x horizon {cfg.horizon}, or data.min_history)"
            )
            if policy == "error":
                raise DatasetError(msg)
            if policy == "fallback" and len(g) >= cfg.data.min_fallback_history:
                logger.warning("%s: forecast by the fallback (%s)", msg, cfg.data.fallback)
                short_old.add(int(g["sid"].iloc[0]))
                parts.append(g)
                continue
            skipped.append({**{k: g.iloc[0][k] for k in keys}, "periods": len(g)})
            logger.warning("skipping %s", msg)
            continue
        parts.append(g)
    if len(parts) == len(short_old):
        raise DatasetError(
            f"no series left with at least {cfg.min_history} periods "
            f"({len(skipped)} skipped, {len(short_old)} short)"
        )
    frame = pd.concat(parts, ignore_index=True)
    # dense ids after skipping, in key order
    is_short = frame["sid"].isin(short_old).to_numpy()
    frame["sid"] = frame.groupby("sid", sort=True).ngroup()
    short = sorted(int(i) for i in np.unique(frame.loc[is_short, "sid"]))
    frame = frame[["sid", *keys, "ds", "y", *spec.regressors]]
    logger.info(
        "panel: %s series, %s rows, %s .. %s (%s skipped, %s short -> fallback)",
        frame["sid"].nunique(),
        len(frame),
        frame["ds"].min(),
        frame["ds"].max(),
        len(skipped),
        len(short),
    )
    return Panel(frame, keys, list(spec.regressors), spec.frequency, skipped, short)


def _regularise(
    g: pd.DataFrame, step, frequency: str, gaps: str, label: str, keys: list[str]
) -> pd.DataFrame:
    if frequency != "M":  # monthly dates were moved to month starts: always on the grid
        diffs = g["ds"].diff().dropna()
        off = (diffs % step != pd.Timedelta(0)).to_numpy()
        if off.any():
            bad = g["ds"].iloc[int(np.flatnonzero(off)[0]) + 1]
            raise DatasetError(
                f"series ({label}): date {bad} is off the {frequency} grid "
                f"(periods must be {_step_label(frequency)} apart)"
            )
    grid = pd.date_range(g["ds"].iloc[0], g["ds"].iloc[-1], freq=step)
    if len(grid) == len(g):
        return g
    missing = grid.difference(pd.DatetimeIndex(g["ds"]))
    if gaps == "error":
        raise DatasetError(
            f"series ({label}) has {len(missing)} missing period(s), first {missing[0].date()}; "
            "set data.gaps to fill_zero or interpolate to fill them"
        )
    logger.warning(
        "series (%s): filling %s missing period(s) (%s), first %s",
        label,
        len(missing),
        gaps,
        missing[0].date(),
    )
    filled = g.set_index("ds").reindex(grid)
    filled.index.name = "ds"
    if gaps == "fill_zero":
        filled["y"] = filled["y"].fillna(0.0)
    else:
        filled["y"] = filled["y"].interpolate()
    filled = filled.ffill()
    for k in [*keys, "sid"]:
        filled[k] = g[k].iloc[0]
    return filled.reset_index()


def split_at(panel: Panel, origin: pd.Timestamp, horizon: int) -> tuple[Panel, Panel]:
    """Training rows up to and including ``origin``; test rows in (origin, origin + horizon]."""
    end = origin + horizon * panel.step
    ds = panel.frame["ds"]
    return panel.subset(ds <= origin), panel.subset((ds > origin) & (ds <= end))


# --------------------------------------------------------------------------- Prophet


def _quiet_cmdstan() -> None:
    for name in ("cmdstanpy", "prophet", "prophet.models"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fit_prophet_components(
    history: pd.DataFrame,
    predict_at: pd.DataFrame,
    settings: ProphetSettings,
    regressors: Sequence[str],
) -> pd.DataFrame:
    """Fit one Prophet (MAP) on ``history`` (ds, y, regressors) and return its components
    (p_yhat, p_trend, p_<component>) at ``predict_at`` (ds, regressors), in that order."""
    _quiet_cmdstan()
    from prophet import Prophet

    if settings.max_history is not None:
        history = history.tail(settings.max_history)
    model = Prophet(**settings.as_kwargs())
    if settings.country_holidays:
        model.add_country_holidays(settings.country_holidays)
    for r in regressors:
        model.add_regressor(r)
    model.fit(history[["ds", "y", *regressors]])
    pred = model.predict(predict_at[["ds", *regressors]])
    out = pd.DataFrame({"p_yhat": pred["yhat"].to_numpy(), "p_trend": pred["trend"].to_numpy()})
    for c in PROPHET_COMPONENTS:
        out[f"p_{c}"] = pred[c].to_numpy() if c in pred else 0.0
    return out


ProphetItem = tuple[int, pd.DataFrame, pd.DataFrame]  # (sid, history, predict_at)
ProphetBatch = list[ProphetItem]
ProphetBatchResult = list[tuple[int, pd.DataFrame]]  # (sid, components)
B = TypeVar("B")
R = TypeVar("R")
# Runs ``fn`` over every batch (anywhere: processes, Prefect tasks, a cluster) and yields one
# result per batch in any order (each result names its series). ``fn`` is picklable.
BatchMapper = Callable[[Callable[[B], R], list[B]], Iterable[R]]


def joblib_mapper(workers: int) -> BatchMapper:
    """The default mapper: a joblib loky pool of ``workers`` processes (in-process when 1)."""

    def map_batches(fn: Callable[[B], R], batches: list[B]) -> Iterator[R]:
        if workers <= 1:
            yield from map(fn, batches)
            return
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=workers, backend="loky", return_as="generator")
        yield from parallel(delayed(fn)(b) for b in batches)

    return map_batches


def fit_prophet_batch(
    items: ProphetBatch, settings: ProphetSettings, regressors: list[str]
) -> ProphetBatchResult:
    """Prophet components of every series of one batch (the unit a mapper runs)."""
    _quiet_cmdstan()
    return [
        (sid, fit_prophet_components(hist, at, settings, regressors)) for sid, hist, at in items
    ]


def prophet_batches(
    history: pd.DataFrame, predict_at: pd.DataFrame, regressors: list[str], batch_size: int
) -> list[ProphetBatch]:
    """Per-series (sid, history, predict_at) items of the sids in ``predict_at``, in batches."""
    hist_groups = dict(tuple(history.groupby("sid", sort=True)))
    at_groups = dict(tuple(predict_at.groupby("sid", sort=True)))
    items = [
        (sid, hist_groups[sid][["ds", "y", *regressors]], at_groups[sid][["ds", *regressors]])
        for sid in sorted(at_groups)
    ]
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def prophet_components_panel(
    history: pd.DataFrame,
    predict_at: pd.DataFrame,
    settings: ProphetSettings,
    regressors: list[str],
    workers: int,
    batch_size: int,
    on_batch: ProgressFn | None = None,
    map_batches: BatchMapper | None = None,
) -> pd.DataFrame:
    """Fit Prophet per series in batches through ``map_batches`` (default: a joblib pool of
    ``workers`` processes); one progress call per finished batch.

    Returns ``predict_at`` (sid, ds, ...) with the p_* component columns joined on."""
    batches = prophet_batches(history, predict_at, regressors, batch_size)
    n_series = sum(len(b) for b in batches)
    mapper = map_batches or joblib_mapper(workers)
    fn = partial(fit_prophet_batch, settings=settings, regressors=regressors)
    results: dict[int, pd.DataFrame] = {}
    t0 = time.perf_counter()
    for i, batch_result in enumerate(mapper(fn, batches)):
        for sid, comps in batch_result:
            results[sid] = comps
        logger.info(
            "Prophet: batch %s/%s done, %s/%s series, %.1fs",
            i + 1,
            len(batches),
            len(results),
            n_series,
            time.perf_counter() - t0,
        )
        if on_batch:
            on_batch(i, len(batches), len(results))
    if len(results) != n_series:
        raise RuntimeError(f"Prophet batch mapper returned {len(results)} of {n_series} series")
    parts = []
    for sid, at in predict_at.groupby("sid", sort=True):
        at = at.reset_index(drop=True)
        parts.append(pd.concat([at[["sid", "ds"]], results[sid]], axis=1))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- features


def calendar_features(ds: pd.Series, names: Sequence[str]) -> pd.DataFrame:
    d = pd.DatetimeIndex(ds)
    makers = {
        "hour": lambda: d.hour,
        "dayofweek": lambda: d.dayofweek,
        "dayofmonth": lambda: d.day,
        "dayofyear": lambda: d.dayofyear,
        "weekofyear": lambda: d.isocalendar().week.to_numpy().astype(int),
        "month": lambda: d.month,
        "quarter": lambda: d.quarter,
        "year": lambda: d.year,
    }
    return pd.DataFrame({f"cal_{n}": np.asarray(makers[n](), dtype=float) for n in names})


def lag_features(frame: pd.DataFrame, cfg: ForecastConfig) -> pd.DataFrame:
    """Lag/rolling features of ``y`` per series (frame sorted by sid, ds; regular grid).

    Every feature of the row at ``t`` is a function of y at ``t - min(lags)`` or earlier, so with
    min(lags) >= horizon nothing after the forecast origin is read. Features are normalised by
    the series level (mean of the ``level_window`` periods ending at ``t - min(lags)``)."""
    f = cfg.features
    sid = frame["sid"].to_numpy()
    y = frame["y"]
    g = y.groupby(sid)
    base = g.shift(cfg.min_lag)
    bg = base.groupby(sid)
    level = bg.rolling(f.level_window, min_periods=1).mean().reset_index(level=0, drop=True)
    level = level.sort_index()
    out = pd.DataFrame(index=frame.index)
    out["level"] = level
    safe = level.clip(lower=1e-6)
    for lag in f.lags:
        out[f"lag_{lag}"] = g.shift(lag) / safe
    for w in f.rolling_windows:
        roll = bg.rolling(w, min_periods=1).mean().reset_index(level=0, drop=True).sort_index()
        out[f"roll_{w}"] = roll / safe
    out["log_level"] = np.log1p(level.clip(lower=0))
    return out


# --------------------------------------------------------------------------- models


@dataclass
class IntervalCalibration:
    """Split-conformal intervals from out-of-sample residuals: each series' residual scale
    (mean absolute out-of-sample error) times quantiles of the scaled residuals, one pair of
    quantiles per group of horizon steps (errors grow with the lead time)."""

    level: float
    scale: dict[int, float]
    default_scale: float
    q_low: float  # pooled over every step (reported; the bucket quantiles decide)
    q_high: float
    n_residuals: int
    horizon: int = 1
    bucket_low: list[float] = field(default_factory=list)
    bucket_high: list[float] = field(default_factory=list)

    def _buckets(self, step: np.ndarray | None, n: int) -> np.ndarray:
        k = len(self.bucket_low)
        if not k or step is None:
            return np.full(n, -1)
        return horizon_bucket(np.asarray(step), self.horizon, k)

    def bounds(
        self, sid: np.ndarray, yhat: np.ndarray, step: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        s = np.array([self.scale.get(int(i), self.default_scale) for i in sid], dtype=float)
        b = self._buckets(step, len(s))
        lo_q = np.where(b >= 0, np.asarray([*self.bucket_low, 0.0])[b], self.q_low)
        hi_q = np.where(b >= 0, np.asarray([*self.bucket_high, 0.0])[b], self.q_high)
        return np.maximum(yhat + lo_q * s, 0.0), np.maximum(yhat + hi_q * s, 0.0)


def horizon_bucket(step: np.ndarray, horizon: int, buckets: int) -> np.ndarray:
    """Group of a 1-based horizon step: ``buckets`` equal groups of 1..horizon."""
    k = max(1, min(buckets, horizon))
    return np.clip(((np.asarray(step) - 1) * k) // max(horizon, 1), 0, k - 1).astype(int)


def _conformal_quantile(z: np.ndarray, q: float) -> float:
    """Finite-sample conformal quantile: the ceil((n + 1) q)-th smallest (clipped to n)."""
    n = len(z)
    if n == 0:
        return float("nan")
    if q >= 0.5:
        k = min(int(np.ceil((n + 1) * q)), n)
        return float(np.sort(z)[k - 1])
    k = max(int(np.floor((n + 1) * q)), 1)
    return float(np.sort(z)[k - 1])


def calibrate_intervals(
    residuals: pd.DataFrame,
    level: float,
    min_per_series: int,
    horizon: int | None = None,
    buckets: int = 1,
) -> IntervalCalibration:
    """``residuals``: sid, y, yhat (and ``step``, the 1-based horizon step, for per-step
    quantiles) from out-of-sample forecasts (backtest folds)."""
    r = residuals.dropna(subset=["y", "yhat"])
    if r.empty:
        raise ValueError("no out-of-sample residuals to calibrate prediction intervals")
    err = r["y"].to_numpy() - r["yhat"].to_numpy()
    stats = (
        pd.DataFrame({"sid": r["sid"].to_numpy(), "abs": np.abs(err)})
        .groupby("sid")["abs"]
        .agg(["mean", "size"])
    )
    good = stats[(stats["size"] >= min_per_series) & (stats["mean"] > 0)]
    default = float(good["mean"].median()) if len(good) else float(np.mean(np.abs(err)) or 1.0)
    scale = {int(k): float(v) for k, v in good["mean"].items()}
    s = np.array([scale.get(int(i), default) for i in r["sid"]], dtype=float)
    z = err / s
    alpha = 1.0 - level
    lo_q, hi_q = alpha / 2, 1 - alpha / 2
    cal = IntervalCalibration(
        level=level,
        scale=scale,
        default_scale=default,
        q_low=_conformal_quantile(z, lo_q),
        q_high=_conformal_quantile(z, hi_q),
        n_residuals=len(z),
    )
    if "step" in r.columns and horizon and buckets > 1:
        k = max(1, min(buckets, horizon))
        b = horizon_bucket(r["step"].to_numpy(), horizon, k)
        low, high = [], []
        for i in range(k):
            zi = z[b == i]
            if len(zi) < 20:  # too few: the pooled quantiles
                low.append(cal.q_low)
                high.append(cal.q_high)
            else:
                low.append(_conformal_quantile(zi, lo_q))
                high.append(_conformal_quantile(zi, hi_q))
        cal.horizon, cal.bucket_low, cal.bucket_high = int(horizon), low, high
    return cal


def with_steps(rows: pd.DataFrame, last: pd.Series | dict, frequency: str) -> pd.DataFrame:
    """``rows`` (sid, ds) with ``step``: periods after each series' ``last`` date."""
    last_s = pd.Series(last) if isinstance(last, dict) else last
    ref = pd.DatetimeIndex(last_s.reindex(rows["sid"].to_numpy()).to_numpy())
    return rows.assign(step=periods_between(ref, rows["ds"].to_numpy(), frequency))


class _Forecaster:
    """What every registered forecaster shares: the series keys, the future rows it answers
    (``horizon`` periods after each series' last date), request resolution, a cached forecast
    table and conformal intervals. Subclasses fit and fill ``_future_forecast``."""

    family = "base"
    uses_prophet = False

    def __init__(self, cfg: ForecastConfig):
        self.cfg = cfg
        self.key_columns: list[str] = []
        self.regressors: list[str] = []
        self.frequency = "D"
        self.keys: pd.DataFrame | None = None
        self.series_mean: dict[int, float] = {}
        self.future: pd.DataFrame | None = None  # sid, ds, regressors (+ p_* for the hybrid)
        self.last_date: dict[int, pd.Timestamp] = {}
        self.calibration: IntervalCalibration | None = None
        self.fit_seconds: dict[str, float] = {}
        # after the horizon: sid, ds, regressors (+ p_* / yhat of the Prophet families), so a
        # forecast from a later origin can be answered (models/origin.py); None: not kept
        self.extension: pd.DataFrame | None = None

    def _start_fit(self, panel: Panel) -> pd.DataFrame:
        self.key_columns = list(panel.key_columns)
        self.regressors = list(panel.regressors)
        self.frequency = panel.frequency
        self.keys = panel.keys
        frame = panel.frame.sort_values(["sid", "ds"]).reset_index(drop=True)
        self.series_mean = frame.groupby("sid")["y"].mean().astype(float).to_dict()
        self.last_date = frame.groupby("sid")["ds"].max().to_dict()
        return frame

    def _future_rows(
        self, panel: Panel, future_regressors: pd.DataFrame | None, skip: int = 0, n: int = 0
    ) -> pd.DataFrame:
        """Rows (sid, ds, regressors) of periods ``skip + 1 .. skip + n`` after each series'
        last date (default: the horizon)."""
        h = n or self.cfg.horizon
        last = panel.frame.groupby("sid")["ds"].max()
        rows = pd.DataFrame(
            {
                "sid": np.repeat(last.index.to_numpy(), h),
                "ds": np.concatenate(
                    [future_dates(d, skip + h, panel.frequency)[skip:].to_numpy() for d in last]
                ),
            }
        )
        if panel.regressors:
            rows = self._attach_future_regressors(rows, panel, future_regressors)
        return rows

    def _extension_rows(
        self, panel: Panel, future_regressors: pd.DataFrame | None
    ) -> pd.DataFrame | None:
        """The ``cfg.extension_periods`` rows after the horizon (a forecast from an origin moved
        by ingested actuals reaches into them), or None."""
        n = self.cfg.extension_periods
        return self._future_rows(panel, future_regressors, self.cfg.horizon, n) if n else None

    def _attach_future_regressors(
        self, rows: pd.DataFrame, panel: Panel, future_regressors: pd.DataFrame | None
    ) -> pd.DataFrame:
        regs = panel.regressors
        last_vals = panel.frame.groupby("sid")[regs].last()
        if future_regressors is not None:
            known = future_regressors.merge(panel.keys, on=panel.key_columns)[["sid", "ds", *regs]]
            rows = rows.merge(known, on=["sid", "ds"], how="left")
        else:
            rows = rows.assign(**{r: np.nan for r in regs})
        missing = rows[regs].isna().any(axis=1)
        if missing.any():
            logger.info(
                "%s future rows lack regressor values: carrying each series' last values forward",
                int(missing.sum()),
            )
            fill = last_vals.loc[rows["sid"]].reset_index(drop=True)
            rows[regs] = rows[regs].fillna(fill)
        return rows

    def _resolve(self, request: pd.DataFrame) -> pd.DataFrame:
        """request: key columns + ds -> sid, ds (errors name the offending key/date)."""
        missing = [c for c in [*self.key_columns, "ds"] if c not in request.columns]
        if missing:
            raise ValueError(f"forecast request lacks column(s) {missing}")
        assert self.keys is not None
        req = request[[*self.key_columns, "ds"]].copy()
        req["ds"] = pd.to_datetime(req["ds"])
        for k in self.key_columns:
            req[k] = req[k].astype(self.keys[k].dtype)
        merged = req.merge(self.keys, on=self.key_columns, how="left")
        unknown = merged["sid"].isna()
        if unknown.any():
            row = merged[unknown].iloc[0]
            raise ValueError(
                f"unknown series ({_key_label(row, self.key_columns)}): not in the training data"
            )
        merged["sid"] = merged["sid"].astype(int)
        window = self._window()
        lo = window["min"].reindex(merged["sid"]).to_numpy()
        hi = window["max"].reindex(merged["sid"]).to_numpy()
        bad = (merged["ds"].to_numpy() < lo) | (merged["ds"].to_numpy() > hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            row = merged.iloc[i]
            raise ValueError(
                f"date {row['ds'].date()} for series ({_key_label(row, self.key_columns)}) is "
                f"outside the forecast window {pd.Timestamp(lo[i]).date()} .. "
                f"{pd.Timestamp(hi[i]).date()} (horizon {self.cfg.horizon} after the last date)"
            )
        return merged

    # -- caches: derived from ``tail`` and ``future`` (fixed after fit), never pickled
    _CACHES = ("_window_cache", "_forecast_cache")

    def _drop_caches(self) -> None:
        for name in self._CACHES:
            self.__dict__.pop(name, None)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in self._CACHES:
            state.pop(name, None)
        return state

    def _window(self) -> pd.DataFrame:
        """First and last forecastable date per sid (columns min, max)."""
        window = self.__dict__.get("_window_cache")
        if window is None:
            assert self.future is not None
            window = self.future.groupby("sid")["ds"].agg(["min", "max"])
            self._window_cache = window
        return window

    def precompute(self) -> pd.DataFrame:
        """Forecast the whole window of every series once; ``predict`` then only looks rows up
        (serving: a one-series request costs a lookup instead of a feature build + booster call).
        Returns the table (sid, ds, yhat[, p_yhat])."""
        table = self.__dict__.get("_forecast_cache")
        if table is None:
            table = self._future_forecast()
            self._forecast_cache = table
        return table

    def predict(self, request: pd.DataFrame, components: bool = False) -> pd.DataFrame:
        """request: key columns + ds. Returns key columns, ds, yhat, yhat_lower, yhat_upper
        (NaN bounds when uncalibrated) in request order; with ``components`` also p_yhat.
        Uses the ``precompute`` table when it exists (same values)."""
        req = self._resolve(request)
        out = self.__dict__.get("_forecast_cache")
        if out is None:
            out = self._future_forecast(np.unique(req["sid"].to_numpy()))
        result = req[["sid", *self.key_columns, "ds"]].merge(out, on=["sid", "ds"], how="left")
        if self.calibration is not None:
            steps = with_steps(result[["sid", "ds"]], self.last_date, self.frequency)["step"]
            lo, hi = self.calibration.bounds(
                result["sid"].to_numpy(), result["yhat"].to_numpy(), steps.to_numpy()
            )
        else:
            lo = hi = np.full(len(result), np.nan)
        result["yhat_lower"], result["yhat_upper"] = lo, hi
        cols = [*self.key_columns, "ds", "yhat", "yhat_lower", "yhat_upper"]
        if components and self.uses_prophet:
            cols.append("p_yhat")
        return result[["sid", *cols]] if components else result[cols]

    def future_request(self, horizon: int | None = None) -> pd.DataFrame:
        """Every series x the first ``horizon`` future periods (default: the whole window)."""
        assert self.future is not None and self.keys is not None
        h = horizon or self.cfg.horizon
        fut = self.future[self.future.groupby("sid").cumcount() < h][["sid", "ds"]]
        return fut.merge(self.keys, on="sid")[[*self.key_columns, "ds"]]

    def calibrate(self, residuals: pd.DataFrame) -> IntervalCalibration:
        iv = self.cfg.intervals
        self.calibration = calibrate_intervals(
            residuals, iv.level, iv.min_residuals_per_series, self.cfg.horizon, iv.horizon_buckets
        )
        logger.info(
            "%s: %.0f%% intervals from %s out-of-sample residuals (scaled quantiles %.2f, %.2f)",
            self.family,
            100 * self.calibration.level,
            self.calibration.n_residuals,
            self.calibration.q_low,
            self.calibration.q_high,
        )
        return self.calibration


class _GlobalForecaster(_Forecaster):
    """Shared machinery of the hybrid and of XGBoost alone: one global XGBoost over all series,
    a stored tail of each series for lag features, and precomputed future rows."""

    family = "global"

    def __init__(self, cfg: ForecastConfig):
        super().__init__(cfg)
        self.booster = None
        self.feature_names: list[str] = []
        self.tail: pd.DataFrame | None = None  # last periods of history needed for lags

    # -- shared pieces
    @property
    def tail_periods(self) -> int:
        f = self.cfg.features
        return max(max(f.lags), self.cfg.min_lag + max(f.level_window, *f.rolling_windows)) + 1

    def _key_codes(self, sid: pd.Series) -> pd.DataFrame:
        assert self.keys is not None
        codes = {}
        for k in self.key_columns:
            cats = pd.Index(sorted(self.keys[k].unique()))
            vals = self.keys.set_index("sid")[k].reindex(sid.to_numpy()).to_numpy()
            codes[f"key_{k}"] = cats.get_indexer(vals).astype(float)
        return pd.DataFrame(codes, index=sid.index)

    def _design(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Features for every row of ``frame`` (sid, ds, y, regressors[, p_*]), sorted."""
        lags = lag_features(frame, self.cfg)
        parts = [
            self._key_codes(frame["sid"]),
            calendar_features(frame["ds"], self.cfg.features.calendar).set_index(frame.index),
            lags,
        ]
        if self.regressors:
            parts.append(frame[self.regressors].add_prefix("reg_"))
        X = pd.concat(parts, axis=1)
        floor = self._floor(frame["sid"])
        X["_floor"] = floor
        if self.uses_prophet:
            trend = np.maximum(frame["p_trend"].to_numpy(), floor)
            X["p_trend_to_level"] = trend / np.maximum(lags["level"].to_numpy(), floor)
            X["p_yhat_to_trend"] = frame["p_yhat"].to_numpy() / trend
            for c in PROPHET_COMPONENTS:
                X[f"p_{c}_to_trend"] = frame[f"p_{c}"].to_numpy() / trend
            X["_trend"] = trend
            X["_p_yhat"] = frame["p_yhat"].to_numpy()
        return X

    def _floor(self, sid: pd.Series) -> np.ndarray:
        means = pd.Series(self.series_mean)
        return np.maximum(0.05 * means.reindex(sid.to_numpy()).to_numpy(), 1e-3)

    def _base(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(multiplier, offset): y = offset + multiplier * model output."""
        level = np.maximum(X["level"].to_numpy(), X["_floor"].to_numpy())
        return level, np.zeros(len(X))

    def _features_only(self, X: pd.DataFrame) -> pd.DataFrame:
        return X[self.feature_names]

    # -- fit / predict

    def fit(self, panel: Panel, future_regressors: pd.DataFrame | None = None):
        t0 = time.perf_counter()
        frame = self._start_fit(panel)
        future = self._future_rows(panel, future_regressors)
        self._future_regressors = future_regressors
        if not self.uses_prophet:
            self.extension = self._extension_rows(panel, future_regressors)
        frame, future = self._add_components(frame, future, panel)
        del self._future_regressors
        self.fit_seconds["components"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        X = self._design(frame)
        mult, off = self._base(X)
        target = (frame["y"].to_numpy() - off) / mult
        ok = X["level"].notna().to_numpy() & np.isfinite(target)
        if self.cfg.xgboost.max_train_periods is not None:
            rank = frame.groupby("sid").cumcount(ascending=False).to_numpy()
            ok &= rank < self.cfg.xgboost.max_train_periods
        self.feature_names = [c for c in X.columns if not c.startswith("_")]
        import xgboost as xgb

        model = xgb.XGBRegressor(**self.cfg.xgboost.as_kwargs(), tree_method="hist")
        logger.info(
            "%s: fitting global XGBoost on %s rows x %s features",
            self.family,
            int(ok.sum()),
            len(self.feature_names),
        )
        model.fit(X.loc[ok, self.feature_names], target[ok])
        self.booster = model
        self.fit_seconds["xgboost"] = time.perf_counter() - t1
        keep = frame.groupby("sid").cumcount(ascending=False) < self.tail_periods
        self.tail = frame.loc[keep, ["sid", "ds", "y", *self.regressors]].reset_index(drop=True)
        self.future = future
        self._drop_caches()
        logger.info(
            "%s: fitted %s series in %.1fs (%s)",
            self.family,
            panel.n_series,
            time.perf_counter() - t0,
            ", ".join(f"{k} {v:.1f}s" for k, v in self.fit_seconds.items()),
        )
        return self

    def _add_components(
        self, frame: pd.DataFrame, future: pd.DataFrame, panel: Panel
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        return frame, future

    def _future_forecast(self, sids: np.ndarray | None = None) -> pd.DataFrame:
        """sid, ds, yhat (+ p_yhat for the hybrid) for every future row of ``sids`` (None: all).

        Lag features need each series' stored tail, but only the future rows are scored (the
        booster scores rows independently, so the subset changes no value)."""
        assert self.tail is not None and self.future is not None
        fut, tail = self.future, self.tail
        if sids is not None:
            fut, tail = fut[fut["sid"].isin(sids)], tail[tail["sid"].isin(sids)]
        frame = pd.concat(
            [tail.assign(_future=False), fut.assign(y=np.nan, _future=True)], ignore_index=True
        )
        frame = frame.sort_values(["sid", "ds"]).reset_index(drop=True)
        rows = frame.pop("_future").to_numpy(dtype=bool)
        X = self._design(frame)[rows]
        frame = frame[rows]
        mult, off = self._base(X)
        yhat = np.maximum(off + mult * self.booster.predict(X[self.feature_names]), 0.0)
        out = frame[["sid", "ds"]].assign(yhat=yhat)
        if self.uses_prophet:
            out["p_yhat"] = np.maximum(frame["p_yhat"].to_numpy(), 0.0)
        return out.reset_index(drop=True)


class GlobalXGBoost(_GlobalForecaster):
    """XGBoost alone (baseline): calendar, keys, regressors and lag >= horizon features;
    target y / series level."""

    family = "xgboost"


class _ProphetFits:
    """What the Prophet-based families share: one Prophet per series, fitted in batches
    (``on_batch`` reports progress, ``map_batches`` runs them; None: joblib_mapper(workers)),
    neither of which is model state."""

    cfg: ForecastConfig
    regressors: list[str]

    def __init__(
        self,
        cfg: ForecastConfig,
        on_batch: ProgressFn | None = None,
        map_batches: BatchMapper | None = None,
    ):
        super().__init__(cfg)  # type: ignore[call-arg]
        self.on_batch = on_batch
        self.map_batches = map_batches

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # type: ignore[misc]
        # progress callbacks (loggers, closures) and executors are not model state
        state["on_batch"] = state["map_batches"] = None
        return state

    def _prophet(self, frame: pd.DataFrame, at: pd.DataFrame) -> pd.DataFrame:
        """Prophet's components (p_yhat, trend, seasonalities...) of every series at ``at``."""
        return prophet_components_panel(
            frame,
            at,
            self.cfg.prophet,
            self.regressors,
            self.cfg.workers,
            self.cfg.batch_size,
            self.on_batch,
            self.map_batches,
        )


class HybridProphetXGBoost(_ProphetFits, _GlobalForecaster):
    """Prophet per series + one global XGBoost on Prophet's residuals (see module docstring).

    ``features.residual`` picks what XGBoost learns: ``ratio_trend`` (y / Prophet trend, with
    Prophet's seasonal/holiday/regressor components as features), ``ratio_yhat`` (y / yhat) or
    ``difference_yhat`` ((y - yhat) / series mean)."""

    family = "hybrid"
    uses_prophet = True

    def _add_components(
        self, frame: pd.DataFrame, future: pd.DataFrame, panel: Panel
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        ext = self._extension_rows(panel, self._future_regressors)
        parts = [frame, future] + ([ext] if ext is not None else [])
        at = pd.concat(
            [p[["sid", "ds", *self.regressors]] for p in parts], ignore_index=True
        ).sort_values(["sid", "ds"])
        comps = self._prophet(frame, at)
        frame = frame.merge(comps, on=["sid", "ds"], how="left")
        future = future.merge(comps, on=["sid", "ds"], how="left")
        if ext is not None:
            self.extension = ext.merge(comps, on=["sid", "ds"], how="left")
        return frame, future

    def _base(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        mode = self.cfg.features.residual
        floor = X["_floor"].to_numpy()
        if mode == "ratio_trend":
            return X["_trend"].to_numpy(), np.zeros(len(X))
        if mode == "ratio_yhat":
            return np.maximum(X["_p_yhat"].to_numpy(), floor), np.zeros(len(X))
        return floor / 0.05, X["_p_yhat"].to_numpy()  # difference scaled by the series mean


# --------------------------------------------------------------------------- seasonal naive


def seasonal_naive(history: Panel, request: pd.DataFrame, period: int) -> pd.DataFrame:
    """Repeat the last ``period`` observed periods of each series: the forecast for t is y at
    t - period * ceil((t - last) / period). request: sid, ds -> adds yhat."""
    frame = history.frame
    last = frame.groupby("sid")["ds"].max()
    req = request[["sid", "ds"]].copy()
    k = periods_between(
        last.reindex(req["sid"]).to_numpy(), req["ds"].to_numpy(), history.frequency
    )
    back = period * np.ceil(k / period).astype(int)
    src = shift_periods(req["ds"].to_numpy(), -back, history.frequency)
    lookup = frame.set_index(["sid", "ds"])["y"]
    idx = pd.MultiIndex.from_arrays([req["sid"], pd.DatetimeIndex(src)])
    req["yhat"] = lookup.reindex(idx).to_numpy()
    return req


# --------------------------------------------------------------------------- simple families


def season_for(n_periods: int, seasons: Sequence[int], fixed: int | None = None) -> int | None:
    """The season a series of ``n_periods`` uses: ``fixed`` when it fits, else the longest of
    the frequency's ``seasons`` it covers, else None (not even one season of history)."""
    if fixed is not None and fixed <= n_periods:
        return fixed
    fits = [p for p in seasons if p <= n_periods]
    return max(fits) if fits else None


class _TableForecaster(_Forecaster):
    """A forecaster whose whole future is computed at fit time (a table sid, ds, yhat)."""

    def __init__(self, cfg: ForecastConfig):
        super().__init__(cfg)
        self.table: pd.DataFrame | None = None
        self.tail: pd.DataFrame | None = None  # the last season(s): a later origin's history

    def tail_periods(self, panel: Panel) -> int:
        return max(*panel.seasons, self.cfg.season_length or 0) + 1

    def fit(self, panel: Panel, future_regressors: pd.DataFrame | None = None):
        t0 = time.perf_counter()
        frame = self._start_fit(panel)
        self.future = self._future_rows(panel, future_regressors)
        self._future_regressors = future_regressors
        self.extension = self._extension_rows(panel, future_regressors)
        self.table = self._forecast_table(frame, self.future, panel)
        del self._future_regressors
        keep = frame.groupby("sid").cumcount(ascending=False) < self.tail_periods(panel)
        self.tail = frame.loc[keep, ["sid", "ds", "y", *self.regressors]].reset_index(drop=True)
        self._drop_caches()
        self.fit_seconds["fit"] = time.perf_counter() - t0
        return self

    def _forecast_table(
        self, frame: pd.DataFrame, future: pd.DataFrame, panel: Panel
    ) -> pd.DataFrame:
        raise NotImplementedError

    def _future_forecast(self, sids: np.ndarray | None = None) -> pd.DataFrame:
        assert self.table is not None
        t = self.table if sids is None else self.table[self.table["sid"].isin(sids)]
        return t.reset_index(drop=True)


class SeasonalNaiveForecaster(_TableForecaster):
    """The last season repeated (``season_length``, else per series the longest season of the
    frequency its history covers); a series shorter than every season gets its mean."""

    family = "seasonal_naive"

    def __init__(self, cfg: ForecastConfig):
        super().__init__(cfg)
        self.seasons: dict[int, int | None] = {}

    def _forecast_table(self, frame, future, panel):
        parts = []
        for sid, g in frame.groupby("sid", sort=True):
            period = season_for(len(g), panel.seasons, self.cfg.season_length)
            self.seasons[int(sid)] = period
            at = future.loc[future["sid"] == sid, ["sid", "ds"]]
            if period is None:
                parts.append(at.assign(yhat=float(g["y"].mean())))
                continue
            one = panel.subset(panel.frame["sid"] == sid)
            parts.append(seasonal_naive(one, at, period))
        return pd.concat(parts, ignore_index=True)


class LevelForecaster(_TableForecaster):
    """A flat forecast: the mean of the last season (the longest the history covers, else all
    of it)."""

    family = "level"

    def _forecast_table(self, frame, future, panel):
        levels = {}
        for sid, g in frame.groupby("sid", sort=True):
            period = season_for(len(g), panel.seasons, self.cfg.season_length) or len(g)
            levels[sid] = float(g["y"].tail(period).mean())
        at = future[["sid", "ds"]]
        return at.assign(yhat=at["sid"].map(levels).to_numpy(dtype=float))


class ProphetForecaster(_ProphetFits, _TableForecaster):
    """Prophet alone, one per series (the hybrid's Prophet: same settings, same fits)."""

    family = "prophet"
    uses_prophet = True

    def _forecast_table(self, frame, future, panel):
        at = future[["sid", "ds", *self.regressors]]
        if self.extension is not None:
            at = pd.concat([at, self.extension[["sid", "ds", *self.regressors]]])
            at = at.sort_values(["sid", "ds"], ignore_index=True)
        comps = self._prophet(frame, at)
        yhat = np.maximum(comps["p_yhat"].to_numpy(), 0.0)
        table = comps[["sid", "ds"]].assign(yhat=yhat, p_yhat=yhat)
        if self.extension is not None:
            self.extension = self.extension.merge(table, on=["sid", "ds"], how="left")
            table = table.merge(future[["sid", "ds"]], on=["sid", "ds"])
        return table


class FallbackForecaster:
    """The main family on the series long enough for it and the declared fallback on the
    short ones, behind one interface (keys, future, predict, precompute, calibration): the
    registered pyfunc answers for every series alike."""

    def __init__(self, main: _Forecaster, fallback: _Forecaster):
        self.main, self.fallback = main, fallback
        self.cfg = main.cfg
        self.family = main.family
        self.uses_prophet = main.uses_prophet
        self.key_columns = main.key_columns
        self.regressors = main.regressors
        self.frequency = main.frequency
        assert main.keys is not None and fallback.keys is not None
        self.keys = pd.concat([main.keys, fallback.keys]).sort_values("sid").reset_index(drop=True)
        assert main.future is not None and fallback.future is not None
        self.future = (
            pd.concat([main.future[["sid", "ds"]], fallback.future[["sid", "ds"]]])
            .sort_values(["sid", "ds"])
            .reset_index(drop=True)
        )
        self.last_date = {**main.last_date, **fallback.last_date}

    @property
    def calibration(self) -> IntervalCalibration | None:
        return self.main.calibration

    @property
    def fallback_sids(self) -> list[int]:
        assert self.fallback.keys is not None
        return sorted(int(i) for i in self.fallback.keys["sid"])

    @property
    def n_fallback(self) -> int:
        return len(self.fallback_sids)

    def precompute(self) -> pd.DataFrame:
        return pd.concat(
            [self.main.precompute(), self.fallback.precompute()], ignore_index=True
        ).sort_values(["sid", "ds"])

    def predict(self, request: pd.DataFrame, components: bool = False) -> pd.DataFrame:
        req = request.reset_index(drop=True)
        keys = req[self.key_columns].copy()
        for k in self.key_columns:
            keys[k] = keys[k].astype(self.keys[k].dtype)
        sid = keys.merge(self.keys, on=self.key_columns, how="left")["sid"]
        short = sid.isin(self.fallback_sids).to_numpy()
        parts = []
        for part, mask in ((self.main, ~short), (self.fallback, short)):
            if mask.any():
                out = part.predict(req[mask], components=components)
                parts.append(out.set_axis(np.flatnonzero(mask)))
        result = pd.concat(parts).sort_index()
        return result.reset_index(drop=True)

    def future_request(self, horizon: int | None = None) -> pd.DataFrame:
        return pd.concat(
            [self.main.future_request(horizon), self.fallback.future_request(horizon)],
            ignore_index=True,
        )


FORECASTER_FAMILIES = ("seasonal_naive", "level", "prophet", "xgboost", "hybrid")


def make_forecaster(
    family: str,
    cfg: ForecastConfig,
    on_batch: ProgressFn | None = None,
    map_batches: BatchMapper | None = None,
) -> _Forecaster:
    """An unfitted forecaster of ``family`` (one of FORECASTER_FAMILIES)."""
    if family == "hybrid":
        return HybridProphetXGBoost(cfg, on_batch, map_batches)
    if family == "prophet":
        return ProphetForecaster(cfg, on_batch, map_batches)
    if family == "xgboost":
        return GlobalXGBoost(cfg)
    if family == "seasonal_naive":
        return SeasonalNaiveForecaster(cfg)
    if family == "level":
        return LevelForecaster(cfg)
    raise ValueError(f"unknown forecast family {family!r} (known: {FORECASTER_FAMILIES})")


def fit_with_fallback(
    family: str,
    panel: Panel,
    cfg: ForecastConfig,
    on_batch: ProgressFn | None = None,
    map_batches: BatchMapper | None = None,
    future_regressors: pd.DataFrame | None = None,
) -> _Forecaster | FallbackForecaster:
    """``family`` fitted on the panel's main series; with short series (``data.short_series:
    fallback``), the declared fallback fitted on them, both behind one FallbackForecaster."""
    main = make_forecaster(family, cfg, on_batch, map_batches).fit(
        panel.main_part(), future_regressors
    )
    short = panel.short_part()
    if short is None:
        return main
    fb = make_forecaster(cfg.data.fallback, cfg).fit(short, future_regressors)
    logger.info(
        "%s series too short for %s: forecast by %s", short.n_series, family, cfg.data.fallback
    )
    return FallbackForecaster(main, fb)
