"""Forecast tasks over live data, as plain functions the service wires (serving/service.py):
ingest actuals (check them against the served version's series, store them), and answer a
forecast from the latest known data with optional what-if regressors (models/origin.py).

A request with no actuals after the version's training data and no what-if takes the
precomputed window (the fast path, unchanged); otherwise the forecast is recomputed for that
one series from its stored tail plus its actuals.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from shelfwise.configs.actuals import ActualsSettings
from shelfwise.configs.datasets import TimeSeriesDatasetSpec
from shelfwise.models.origin import (
    CurrentForecast,
    OriginError,
    RatioCorrection,
    current_forecast,
    ratio_correction,
    with_intervals,
)
from shelfwise.monitoring.actuals import (
    ActualsError,
    ActualsStore,
    SeriesCatalogue,
    UpsertResult,
    validate_actuals,
)
from shelfwise.registry.load import LoadedForecastModel
from shelfwise.serving.forecast import ForecastInputError
from shelfwise.serving.schemas import ForecastPoint


@dataclass(frozen=True)
class SeriesIndex:
    """A served version's series: key tuple -> sid, and the catalogue actuals are checked on."""

    sid: Mapping[tuple[Any, ...], int]
    catalogue: SeriesCatalogue
    trained_until: pd.Timestamp  # the earliest last training date over the series


def series_index(model: LoadedForecastModel) -> SeriesIndex:
    fc = model.model
    cols = list(model.key_columns)
    keys = fc.keys[["sid", *cols]]
    sid: dict[tuple[Any, ...], int] = {}
    anchors: dict[tuple[Any, ...], pd.Timestamp] = {}
    for row in keys.itertuples(index=False):
        values = tuple(
            int(v) if c in model.integer_keys else str(v)
            for c, v in zip(cols, row[1:], strict=True)
        )
        sid[values] = int(row[0])
        anchors[values] = pd.Timestamp(fc.last_date[int(row[0])])
    catalogue = SeriesCatalogue(tuple(cols), model.integer_keys, anchors)
    return SeriesIndex(sid, catalogue, min(anchors.values()))


class LiveForecasts:
    """Per-process caches over one actuals store: the series index of each served version and
    the pooled ratio correction per (version, actuals revision)."""

    def __init__(self, store: ActualsStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._index: dict[tuple[str, str], SeriesIndex] = {}
        self._correction: dict[tuple[str, str], tuple[Any, RatioCorrection]] = {}

    def index(self, model: LoadedForecastModel) -> SeriesIndex:
        key = (model.registered_name, model.version)
        with self._lock:
            found = self._index.get(key)
        if found is None:
            found = series_index(model)
            with self._lock:
                self._index[key] = found
        return found

    def ingest(
        self,
        task: str,
        model: LoadedForecastModel,
        spec: TimeSeriesDatasetSpec,
        rows: list[dict[str, Any]],
        negative_target: str,
        settings: ActualsSettings,
        source: str | None = None,
    ) -> UpsertResult:
        """Validate (``ActualsError`` names row and column) and store one batch."""
        if len(rows) > settings.max_rows:
            raise ActualsError(
                f"{len(rows)} rows in one request; at most actuals.max_rows = "
                f"{settings.max_rows}: send them in batches"
            )
        frame = validate_actuals(rows, spec, self.index(model).catalogue, negative_target)
        return self.store.upsert(task, frame, model.key_columns, spec.regressors, source)

    def correction(
        self, task: str, model: LoadedForecastModel, settings: ActualsSettings
    ) -> RatioCorrection | None:
        if settings.correction == "none":
            return None
        key = (task, f"{model.registered_name}@{model.version}")
        revision = self.store.revision(task)
        with self._lock:
            cached = self._correction.get(key)
        if cached is not None and cached[0] == revision:
            return cached[1]
        index = self.index(model)
        cols = list(model.key_columns)
        recent = self.store.task_history(task, cols, after=index.trained_until)
        if len(recent):
            tuples = recent[cols].itertuples(index=False, name=None)
            recent = recent.assign(sid=[index.sid.get(tuple(t), -1) for t in tuples])
        else:
            recent = recent.assign(sid=pd.Series(dtype=int))
        stale = model.model.precompute()
        corr = ratio_correction(stale, recent, settings.window, settings.shrinkage)
        with self._lock:
            self._correction[key] = (revision, corr)
        return corr

    def forecast(
        self,
        task: str,
        model: LoadedForecastModel,
        keys: Mapping[str, Any],
        periods: int,
        regressors: Mapping[str, list[float | None]] | None,
        settings: ActualsSettings,
    ) -> CurrentForecast | None:
        """The forecast from the latest known data, or None when the fast path answers the same
        (no actuals after training, no what-if)."""
        index = self.index(model)
        sid = index.sid[tuple(keys[k] for k in model.key_columns)]
        regs = list(model.model.regressors)
        trained = pd.Timestamp(model.model.last_date[sid])
        actuals = self.store.series_history(task, keys, model.key_columns, regs, after=trained)
        if actuals.empty and not regressors:
            return None
        if regressors:
            check_what_if(regressors, regs, periods)
        correction = self.correction(task, model, settings) if len(actuals) else None
        try:
            return current_forecast(model.model, sid, periods, actuals, regressors, correction)
        except OriginError as exc:
            raise ForecastInputError(str(exc), (exc.field,)) from None


def check_what_if(
    regressors: Mapping[str, list[float | None]], declared: list[str], periods: int
) -> None:
    unknown = sorted(set(regressors) - set(declared))
    if unknown:
        raise ForecastInputError(
            f"unknown regressor(s) {unknown}: this task declares "
            f"{', '.join(declared) or 'no regressors'}",
            ("regressors", unknown[0]),
        )
    for name, values in regressors.items():
        if len(values) > periods:
            raise ForecastInputError(
                f"regressor {name!r} has {len(values)} values for a {periods}-period forecast",
                ("regressors", name),
            )


def as_frame(model: LoadedForecastModel, sid: int, frame: pd.DataFrame) -> pd.DataFrame:
    """ds, yhat -> date, yhat, yhat_lower, yhat_upper (what serving/forecast.py takes)."""
    out = with_intervals(model.model, sid, frame)
    return out.rename(columns={"ds": "date"})


def points(frame: pd.DataFrame, n: int) -> list[ForecastPoint]:
    """The first ``n`` rows of ``as_frame`` output as response points."""
    import math

    def bound(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return [
        ForecastPoint(
            date=pd.Timestamp(r.date).date(),
            yhat=float(r.yhat),
            yhat_lower=bound(r.yhat_lower),
            yhat_upper=bound(r.yhat_upper),
        )
        for r in frame.head(n).itertuples(index=False)
    ]


def forecast_frame(
    live: LiveForecasts | None,
    task: str,
    model: LoadedForecastModel,
    keys: Mapping[str, Any],
    periods: int,
    settings: ActualsSettings,
) -> tuple[pd.DataFrame, Any]:
    """(date, yhat, yhat_lower, yhat_upper; origin) of one series from its latest known data."""
    current = live.forecast(task, model, keys, periods, None, settings) if live else None
    if current is None:
        frame = model.forecast(keys, periods)
        from shelfwise.models.forecast import period_step

        origin = (pd.Timestamp(frame["date"].iloc[0]) - period_step(model.frequency)).date()
        return frame, origin
    sid = live.index(model).sid[tuple(keys[k] for k in model.key_columns)]  # type: ignore[union-attr]
    return as_frame(model, sid, current.forecast), current.origin.date()


def stock_alerts(
    live: LiveForecasts | None,
    task: str,
    model: LoadedForecastModel,
    positions: list[tuple[Mapping[str, Any], float]],
    inventory: Any,
    settings: ActualsSettings,
) -> list[Any]:
    """The stock risk (monitoring/alerts.py) of each (series keys, on hand) position."""
    from shelfwise.monitoring.alerts import stock_risk

    if model.interval_level is None:
        raise ForecastInputError(
            f"{model.registered_name} v{model.version} has no calibrated intervals: no "
            "stockout probabilities",
            ("positions",),
        )
    if inventory.lead_time > model.horizon:
        raise ForecastInputError(
            f"inventory.lead_time {inventory.lead_time} is beyond the model's horizon "
            f"{model.horizon}",
            ("lead_time",),
        )
    risks = []
    for keys, on_hand in positions:
        frame, origin = forecast_frame(live, task, model, keys, inventory.lead_time, settings)
        risks.append(
            stock_risk(frame, on_hand, model.interval_level, inventory, keys, model.version, origin)
        )
    return risks
