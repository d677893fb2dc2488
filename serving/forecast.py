"""The forecast endpoint's logic as plain functions: check a request against the served model,
turn its forecast into the response (inventory advice from models/inventory.py) and into the
prediction-log row. The service only wires them (serving/service.py).

Schema errors (types, ranges) are answered by BentoML with 400 before this code runs; what
depends on the served model (its key columns, its horizon, its series) raises
``ForecastInputError``: 422 naming the field, or 404 for a series the model does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from shelfwise.models.inventory import plan, sd_from_interval
from shelfwise.monitoring.store import PredictionRecord
from shelfwise.registry.load import LoadedForecastModel
from shelfwise.serving.schemas import (
    ForecastPoint,
    ForecastRequest,
    ForecastResponse,
    InventoryAdvice,
)


class ForecastInputError(ValueError):
    """A request the served model cannot answer; ``loc`` names the field (pydantic style)."""

    def __init__(self, message: str, loc: tuple[str, ...] = (), status: int = 422) -> None:
        super().__init__(message)
        self.loc = loc
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "detail": [{"loc": list(self.loc), "msg": str(self)}]}


def series_keys(model: LoadedForecastModel, series: Mapping[str, int | str]) -> dict[str, Any]:
    """The request's series as the model's key columns and types; errors name the key."""
    expected = ", ".join(model.key_columns)
    for name in series:
        if name not in model.key_columns:
            raise ForecastInputError(
                f"unknown series key {name!r}: {model.registered_name} v{model.version} "
                f"identifies a series by {expected}",
                ("series", name),
            )
    keys: dict[str, Any] = {}
    for name in model.key_columns:
        if name not in series:
            raise ForecastInputError(
                f"series lacks key {name!r} (keys of {model.registered_name}: {expected})",
                ("series", name),
            )
        value = series[name]
        if name in model.integer_keys:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ForecastInputError(
                    f"series key {name!r} must be an integer", ("series", name)
                )
        else:
            value = str(value)
        keys[name] = value
    if tuple(keys[k] for k in model.key_columns) not in model.series:
        label = ", ".join(f"{k}={v}" for k, v in keys.items())
        raise ForecastInputError(
            f"unknown series ({label}): not in the training data of "
            f"{model.registered_name} v{model.version}",
            ("series",),
            status=404,
        )
    return keys


def periods_needed(model: LoadedForecastModel, request: ForecastRequest) -> int:
    """Check horizon and inventory fields against the model; periods to forecast (the horizon,
    or the lead time when it is longer)."""
    who = f"{model.registered_name} v{model.version}"
    if request.horizon > model.horizon:
        raise ForecastInputError(
            f"horizon {request.horizon} is beyond the served model's horizon {model.horizon} "
            f"({who}): ask for 1..{model.horizon} periods",
            ("horizon",),
        )
    inventory = (request.lead_time, request.service_level, request.on_hand)
    if any(v is not None for v in inventory):
        for name in ("lead_time", "service_level"):
            if getattr(request, name) is None:
                raise ForecastInputError(
                    f"{name} is needed for inventory advice (lead_time and service_level give "
                    "safety stock and reorder point; on_hand adds the stockout probability)",
                    (name,),
                )
        assert request.lead_time is not None
        if request.lead_time > model.horizon:
            raise ForecastInputError(
                f"lead_time {request.lead_time} is beyond the served model's horizon "
                f"{model.horizon} ({who})",
                ("lead_time",),
            )
        if model.interval_level is None:
            raise ForecastInputError(
                f"{who} has no calibrated prediction intervals: no inventory advice",
                ("service_level",),
            )
        return max(request.horizon, request.lead_time)
    return request.horizon


def inventory_advice(
    frame: pd.DataFrame, level: float, lead_time: int, service_level: float, on_hand: float | None
) -> InventoryAdvice:
    """Safety stock, reorder point and (with on_hand) stockout probability over the lead time,
    from the forecast's per-period mean and its interval (models/inventory.py)."""
    mean = frame["yhat"].to_numpy(dtype=float)
    sd = sd_from_interval(frame["yhat_lower"].to_numpy(), frame["yhat_upper"].to_numpy(), level)
    p = plan(mean, sd, lead_time, service_level, on_hand if on_hand is not None else 0.0)
    stockout = p.stockout_probability if on_hand is not None else None
    return InventoryAdvice(**{**asdict(p), "on_hand": on_hand, "stockout_probability": stockout})


def _bound(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def forecast_response(
    model: LoadedForecastModel,
    request: ForecastRequest,
    keys: Mapping[str, Any],
    frame: pd.DataFrame,
    prediction_id: str,
) -> ForecastResponse:
    """``frame``: the model's forecast (date, yhat, yhat_lower, yhat_upper) of at least
    ``request.horizon`` periods (more when the lead time is longer)."""
    shown = frame.head(request.horizon)
    points = [
        ForecastPoint(
            date=pd.Timestamp(d).date(), yhat=float(y), yhat_lower=_bound(lo), yhat_upper=_bound(hi)
        )
        for d, y, lo, hi in zip(
            shown["date"], shown["yhat"], shown["yhat_lower"], shown["yhat_upper"], strict=True
        )
    ]
    advice = None
    if request.lead_time is not None and request.service_level is not None:
        assert model.interval_level is not None
        advice = inventory_advice(
            frame, model.interval_level, request.lead_time, request.service_level, request.on_hand
        )
    return ForecastResponse(
        prediction_id=prediction_id,
        model_name=model.registered_name,
        model_version=model.version,
        series={k: (int(v) if k in model.integer_keys else str(v)) for k, v in keys.items()},
        horizon=request.horizon,
        frequency=model.frequency,
        interval_level=model.interval_level,
        forecast=points,
        gate_metrics=dict(model.gate_metrics),
        inventory=advice,
    )


def forecast_record(
    model: LoadedForecastModel,
    request: ForecastRequest,
    response: ForecastResponse,
    created_at: datetime,
) -> PredictionRecord:
    """A small prediction-log row: inputs = keys + horizon (+ inventory inputs when given),
    outputs = a summary of the forecast (not every period)."""
    inputs: dict[str, Any] = {**response.series, "horizon": request.horizon}
    for name in ("lead_time", "service_level", "on_hand"):
        if getattr(request, name) is not None:
            inputs[name] = getattr(request, name)
    yhat = np.array([p.yhat for p in response.forecast], dtype=float)
    outputs: dict[str, Any] = {
        "first_date": response.forecast[0].date.isoformat(),
        "last_date": response.forecast[-1].date.isoformat(),
        "yhat_sum": float(yhat.sum()),
        "yhat_mean": float(yhat.mean()),
    }
    if response.origin is not None:  # where the forecast started (training end or actuals)
        outputs["origin"] = response.origin.isoformat()
        outputs["actuals_used"] = response.actuals_used
    if request.regressors:
        inputs["what_if"] = sorted(request.regressors)
    if response.inventory is not None:
        inv = response.inventory
        outputs.update(safety_stock=inv.safety_stock, reorder_point=inv.reorder_point)
        if inv.stockout_probability is not None:
            outputs["stockout_probability"] = inv.stockout_probability
    return PredictionRecord(
        prediction_id=response.prediction_id,
        created_at=created_at,
        model_name=model.registered_name,
        model_version=model.version,
        inputs=inputs,
        outputs=outputs,
    )
