"""Forecasts from the latest known data: a fitted forecaster of any family, answered from an
origin moved past its training data by realised actuals, optionally with what-if regressors.

The *origin* of a series is its last training date, moved forward over the actuals that
continue it without a gap (periods after a gap wait until the gap is filled). From there:

- the global XGBoost and the hybrid recompute their lag/rolling features on the stored tail plus
  the actuals, and score the ``periods`` rows after the origin (the hybrid takes Prophet's
  components there from its fit: ``extension`` keeps them past the horizon);
- seasonal naive repeats the latest season of the tail plus the actuals; the level forecaster
  takes the mean of that season;
- Prophet extrapolates from its fit (its table, extended past the horizon).

Every feature of a forecast row reads the target at ``t - min(lags)`` or earlier, which is at
most the origin: nothing after the origin is used. Because the lags are at least the horizon, a
date that the stale forecast already covered gets the same features from a later origin; only
dates whose lags reach into the actuals change. A declared *intercept correction*
(``actuals.correction: ratio``) adds what the actuals say about the level: each series' forecast
is multiplied by its recent actual/forecast ratio (on the stale forecast of the periods it has
actuals for), shrunk towards the ratio pooled over every series with actuals.

Panel conventions as in models/forecast.py (``sid``, ``ds``, ``y``, regressors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shelfwise.models.forecast import (
    FallbackForecaster,
    LevelForecaster,
    Panel,
    ProphetForecaster,
    SeasonalNaiveForecaster,
    _Forecaster,
    _GlobalForecaster,
    future_dates,
    seasonal_naive,
)

RATIO_BOUNDS = (0.25, 4.0)  # a ratio of few small counts is noise beyond these


class OriginError(ValueError):
    """A moved-origin forecast the fitted model cannot give; ``field`` names the request field."""

    def __init__(self, message: str, field: str = "horizon") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class History:
    """One series' known data: the stored tail plus the actuals continuing it."""

    frame: pd.DataFrame  # sid, ds, y, regressors (sorted)
    origin: pd.Timestamp
    trained_until: pd.Timestamp
    actuals_used: int
    actuals_waiting: int  # after a gap: stored, not used yet


@dataclass(frozen=True)
class CurrentForecast:
    origin: pd.Timestamp
    trained_until: pd.Timestamp
    actuals_used: int
    actuals_waiting: int
    correction: float
    forecast: pd.DataFrame  # ds, yhat (what-if regressors applied when given)
    baseline: pd.DataFrame | None  # ds, yhat with carried-forward regressors (what-if only)
    regressors: pd.DataFrame  # ds + the regressor values of ``forecast``
    notes: list[str] = field(default_factory=list)


def part_for(model: _Forecaster | FallbackForecaster, sid: int) -> _Forecaster:
    """The forecaster answering ``sid`` (the fallback's for a short series)."""
    if isinstance(model, FallbackForecaster):
        return model.fallback if sid in set(model.fallback_sids) else model.main
    return model


def known_history(model: _Forecaster, sid: int, actuals: pd.DataFrame | None) -> History:
    """The tail of ``sid`` plus the actuals (ds, y, regressors) that continue it without a gap;
    regressor values an actual does not give are carried forward."""
    last = pd.Timestamp(model.last_date[sid])
    tail = getattr(model, "tail", None)
    regs = list(model.regressors)
    if tail is None:
        base = pd.DataFrame({"sid": [sid], "ds": [last], "y": [np.nan]}).assign(
            **{r: np.nan for r in regs}
        )
    else:
        base = tail[tail["sid"] == sid][["sid", "ds", "y", *regs]]
    used = waiting = 0
    if actuals is not None and len(actuals):
        later = actuals[actuals["ds"] > last].sort_values("ds")
        expected = future_dates(last, len(later), model.frequency) if len(later) else []
        run = 0
        for got, want in zip(later["ds"], expected, strict=False):
            if pd.Timestamp(got) != pd.Timestamp(want):
                break
            run += 1
        used, waiting = run, len(later) - run
        if run:
            if tail is None:
                raise OriginError(
                    "this version keeps no history tail (fitted before moving origins "
                    "existed): retrain it to forecast from the latest actuals",
                    "series",
                )
            extra = later.head(run).assign(sid=sid)
            for r in regs:
                if r not in extra.columns:
                    extra[r] = np.nan
            base = pd.concat([base, extra[["sid", "ds", "y", *regs]]], ignore_index=True)
            if regs:
                base[regs] = base[regs].ffill()
    origin = pd.Timestamp(base["ds"].max()) if used else last
    return History(base.reset_index(drop=True), origin, last, used, waiting)


def _known_future(model: _Forecaster, sid: int) -> pd.DataFrame:
    """The fitted future rows of ``sid`` (window + extension): ds, regressors, p_*/yhat."""
    parts = [model.future[model.future["sid"] == sid]]
    ext = getattr(model, "extension", None)
    if ext is not None:
        parts.append(ext[ext["sid"] == sid])
    return pd.concat(parts, ignore_index=True).sort_values("ds").reset_index(drop=True)


def future_regressors(
    model: _Forecaster,
    history: History,
    dates: pd.DatetimeIndex,
    what_if: Mapping[str, Sequence[float | None]] | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(baseline, with what-if): ds + regressor values for ``dates``. The baseline takes the
    fitted future's values where it has them (what the stale forecast used) unless actuals moved
    the origin, else each regressor's latest known value carried forward; what-if values replace
    the baseline's per period (None: keep it)."""
    regs = list(model.regressors)
    base = pd.DataFrame({"ds": dates})
    if not regs:
        return base, base.copy()
    last = history.frame[regs].ffill().iloc[-1]
    if history.actuals_used == 0:
        known = _known_future(model, int(history.frame["sid"].iloc[0]))[["ds", *regs]]
        base = base.merge(known, on="ds", how="left")
    else:
        base = base.assign(**{r: np.nan for r in regs})
    for r in regs:
        base[r] = base[r].fillna(last[r])
    changed = base.copy()
    for name, values in (what_if or {}).items():
        for i, v in enumerate(values[: len(dates)]):
            if v is not None:
                changed.loc[i, name] = float(v)
    return base, changed


def _global_yhat(
    model: _GlobalForecaster, history: History, dates: pd.DatetimeIndex, regs: pd.DataFrame
) -> np.ndarray:
    sid = int(history.frame["sid"].iloc[0])
    fut = pd.DataFrame({"sid": sid, "ds": dates})
    if model.regressors:
        fut = fut.merge(regs, on="ds", how="left")
    if model.uses_prophet:
        known = _known_future(model, sid)
        comps = [c for c in known.columns if c.startswith("p_")]
        fut = fut.merge(known[["ds", *comps]], on="ds", how="left")
    frame = pd.concat(
        [history.frame.assign(_future=False), fut.assign(y=np.nan, _future=True)],
        ignore_index=True,
    )
    rows = frame.pop("_future").to_numpy(dtype=bool)
    X = model._design(frame)[rows]
    mult, off = model._base(X)
    return np.maximum(off + mult * model.booster.predict(X[model.feature_names]), 0.0)


def _table_lookup(model: _Forecaster, sid: int, dates: pd.DatetimeIndex) -> np.ndarray:
    known = pd.concat([model.table[model.table["sid"] == sid], _extension_table(model, sid)])
    got = pd.DataFrame({"ds": dates}).merge(known[["ds", "yhat"]], on="ds", how="left")
    return got["yhat"].to_numpy(dtype=float)


def _extension_table(model: _Forecaster, sid: int) -> pd.DataFrame:
    ext = getattr(model, "extension", None)
    if ext is None or "yhat" not in ext.columns:
        return pd.DataFrame(columns=["sid", "ds", "yhat"])
    return ext[ext["sid"] == sid][["sid", "ds", "yhat"]]


def family_yhat(
    model: _Forecaster, history: History, dates: pd.DatetimeIndex, regs: pd.DataFrame
) -> np.ndarray:
    """Point forecasts of one series at ``dates`` (the periods after its origin)."""
    sid = int(history.frame["sid"].iloc[0])
    if isinstance(model, _GlobalForecaster):
        return _global_yhat(model, history, dates, regs)
    if isinstance(model, SeasonalNaiveForecaster):
        hist = history.frame
        period = model.seasons.get(sid)
        if period is None or len(hist) < period:
            return np.full(len(dates), float(hist["y"].mean()))
        panel = Panel(hist, [], [], model.frequency)
        out = seasonal_naive(panel, pd.DataFrame({"sid": sid, "ds": dates}), period)
        return out["yhat"].to_numpy(dtype=float)
    if isinstance(model, LevelForecaster):
        hist = history.frame["y"].dropna()
        seasons = [p for p in (model.cfg.season_length, *_seasons(model)) if p and p <= len(hist)]
        window = max(seasons) if seasons else len(hist)
        return np.full(len(dates), float(hist.tail(window).mean()))
    if isinstance(model, ProphetForecaster):
        return _table_lookup(model, sid, dates)
    raise OriginError(f"family {model.family!r} cannot forecast from a moved origin", "series")


def _seasons(model: _Forecaster) -> tuple[int, ...]:
    from shelfwise.configs.datasets import SEASON_LENGTHS

    return SEASON_LENGTHS[model.frequency]


@dataclass(frozen=True)
class RatioCorrection:
    """Per-series recent actual/forecast ratios and the pooled one (``ratio_correction``)."""

    pooled: float
    ratio: Mapping[int, float]
    periods: Mapping[int, int]
    shrinkage: float

    def factor(self, sid: int) -> float:
        n = self.periods.get(sid, 0)
        if n == 0:
            return 1.0
        w = n / (n + self.shrinkage)
        return float(self.pooled + w * (self.ratio[sid] - self.pooled))


def ratio_correction(
    stale: pd.DataFrame, actuals: pd.DataFrame, window: int, shrinkage: float
) -> RatioCorrection:
    """``stale``: the model's own forecast (sid, ds, yhat); ``actuals``: sid, ds, y. Each
    series' latest ``window`` actuals that the stale forecast covers give its ratio
    sum(y) / sum(yhat); the pooled ratio sums over every series."""
    joined = actuals[["sid", "ds", "y"]].merge(stale[["sid", "ds", "yhat"]], on=["sid", "ds"])
    joined = joined.sort_values(["sid", "ds"])
    joined = joined[joined.groupby("sid").cumcount(ascending=False) < window]
    if joined.empty:
        return RatioCorrection(1.0, {}, {}, shrinkage)
    sums = joined.groupby("sid")[["y", "yhat"]].sum()
    lo, hi = RATIO_BOUNDS

    def bounded(y: float, yhat: float) -> float:
        return float(np.clip(y / yhat, lo, hi)) if yhat > 0 else 1.0

    ratio = {int(s): bounded(r.y, r.yhat) for s, r in sums.iterrows()}
    pooled = bounded(float(sums["y"].sum()), float(sums["yhat"].sum()))
    periods = joined.groupby("sid").size().astype(int).to_dict()
    return RatioCorrection(pooled, ratio, {int(k): int(v) for k, v in periods.items()}, shrinkage)


def current_forecast(
    model: _Forecaster | FallbackForecaster,
    sid: int,
    periods: int,
    actuals: pd.DataFrame | None = None,
    what_if: Mapping[str, Sequence[float | None]] | None = None,
    correction: RatioCorrection | None = None,
) -> CurrentForecast:
    """The next ``periods`` forecasts of ``sid`` after its latest known period (training data +
    ``actuals``: ds, y, regressors), with ``what_if`` regressor values per period (also the
    baseline without them), times the series' correction factor."""
    part = part_for(model, sid)
    unknown = sorted(set(what_if or {}) - set(part.regressors))
    if unknown:
        declared = ", ".join(part.regressors) or "none"
        raise OriginError(
            f"unknown regressor(s) {unknown}: the model's regressors are {declared}",
            "regressors",
        )
    history = known_history(part, sid, actuals)
    dates = future_dates(history.origin, periods, part.frequency)
    base_regs, what_regs = future_regressors(part, history, dates, what_if)
    notes: list[str] = []
    if part.uses_prophet or isinstance(part, _GlobalForecaster):
        known = _known_future(part, sid)["ds"]
        reach = int(known.isin(dates).sum())
        if reach < len(dates):
            raise OriginError(
                f"the fitted window of this series ends {pd.Timestamp(known.max()).date()}: from "
                f"origin {history.origin.date()} at most {reach} periods can be forecast "
                "(retrain, or raise the training config's origin_extension)"
            )
    factor = correction.factor(sid) if correction is not None and history.actuals_used else 1.0
    yhat = family_yhat(part, history, dates, what_regs) * factor
    baseline = None
    if what_if:
        base = family_yhat(part, history, dates, base_regs) * factor
        baseline = pd.DataFrame({"ds": dates, "yhat": base})
        if not isinstance(part, _GlobalForecaster):
            notes.append(f"the {part.family} family does not use regressors: what-if is inert")
        elif part.uses_prophet:
            notes.append(
                "what-if moves the hybrid's XGBoost features; Prophet's regressor component "
                "keeps the values it was fitted with"
            )
    if history.actuals_waiting:
        notes.append(
            f"{history.actuals_waiting} stored actual(s) after a gap are not used until the "
            f"period after {history.origin.date()} arrives"
        )
    return CurrentForecast(
        origin=history.origin,
        trained_until=history.trained_until,
        actuals_used=history.actuals_used,
        actuals_waiting=history.actuals_waiting,
        correction=factor,
        forecast=pd.DataFrame({"ds": dates, "yhat": yhat}),
        baseline=baseline,
        regressors=what_regs,
        notes=notes,
    )


def with_intervals(
    model: _Forecaster | FallbackForecaster, sid: int, frame: pd.DataFrame
) -> pd.DataFrame:
    """``frame`` (ds, yhat; the periods after an origin, in order) with yhat_lower/yhat_upper
    from the model's calibration at steps 1, 2, ... (NaN without a calibration)."""
    cal = model.calibration
    out = frame.copy()
    if cal is None:
        out["yhat_lower"] = out["yhat_upper"] = np.nan
        return out
    steps = np.arange(1, len(out) + 1)
    lo, hi = cal.bounds(np.full(len(out), sid), out["yhat"].to_numpy(), steps)
    out["yhat_lower"], out["yhat_upper"] = lo, hi
    return out
