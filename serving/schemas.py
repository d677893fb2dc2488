"""Request and response schemas of the serving API that every task shares (pydantic; BentoML
turns them into OpenAPI): the forecast request/response (each forecast task subclasses them with
its own example), feedback, served versions.

The tabular tasks' request and response models are generated from each task's dataset spec
(serving/task_api.py).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

# BentoML publishes OpenAPI 3.0, where exclusiveMinimum is a boolean beside minimum (pydantic
# writes the JSON Schema 2020 number form, which 3.0 validators reject).
_POSITIVE_3_0 = {"minimum": 0, "exclusiveMinimum": True}


# -- demand forecast ---------------------------------------------------------------------------

# Upper bounds of the schema; the served model's own horizon (its config) is checked per request.
MAX_SCHEMA_HORIZON = 10_000
MIN_SERVICE_LEVEL, MAX_SERVICE_LEVEL = 0.5, 0.999

EXAMPLE_FORECAST: dict[str, object] = {
    "series": {"store": 1, "item": 1},
    "horizon": 28,
    "on_hand": 400.0,
    "lead_time": 7,
    "service_level": 0.95,
}

KeyName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
KeyValue = StrictInt | Annotated[str, StringConstraints(min_length=1, max_length=128, strict=True)]


class ForecastRequest(BaseModel):
    """A forecast of one series for the next ``horizon`` periods after the training data.

    ``series`` names the series by its key columns (the model's dataset spec, e.g. store and
    item). With ``lead_time`` and ``service_level`` the answer also has safety stock and reorder
    point; with ``on_hand`` as well, the probability of a stockout over the lead time."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, json_schema_extra={"example": EXAMPLE_FORECAST}
    )

    series: dict[KeyName, KeyValue] = Field(
        min_length=1, max_length=16, description="series key columns -> values"
    )
    horizon: int = Field(
        ge=1,
        le=MAX_SCHEMA_HORIZON,
        strict=True,
        description="periods ahead, at most the served model's horizon",
    )
    on_hand: float | None = Field(None, ge=0, le=1e12, description="stock on hand now (units)")
    lead_time: int | None = Field(
        None,
        ge=1,
        le=MAX_SCHEMA_HORIZON,
        strict=True,
        description="replenishment lead time (periods)",
    )
    service_level: float | None = Field(
        None,
        ge=MIN_SERVICE_LEVEL,
        le=MAX_SERVICE_LEVEL,
        description="target cycle service level (probability of no stockout per cycle)",
    )
    regressors: dict[KeyName, list[float | None]] | None = Field(
        None,
        description="what-if: future values of the task's declared regressors, per period after "
        "the origin (null keeps the carried-forward value); the answer then also has the "
        "baseline forecast without them",
    )


class ForecastPoint(BaseModel):
    date: date
    yhat: float
    yhat_lower: float | None = Field(None, description="None: the version has no intervals")
    yhat_upper: float | None = None


class InventoryAdvice(BaseModel):
    """From models/inventory.py over the first ``lead_time`` forecast periods."""

    lead_time: int
    service_level: float
    lead_time_demand_mean: float
    lead_time_demand_sd: float
    safety_stock: float
    reorder_point: float
    on_hand: float | None = None
    stockout_probability: float | None = Field(
        None, description="P(lead-time demand > on_hand); given only with on_hand"
    )


class ForecastResponse(BaseModel):
    prediction_id: str
    task: str | None = None
    model_name: str
    model_version: str
    series: dict[str, int | str]
    horizon: int
    frequency: str = Field(description="the series' frequency (D days, W weeks, ...)")
    interval_level: float | None = Field(None, description="nominal coverage of the intervals")
    forecast: list[ForecastPoint]
    gate_metrics: dict[str, float] = Field(
        description="the version's metrics on the promotion gate's holdout"
    )
    inventory: InventoryAdvice | None = None
    origin: date | None = Field(
        None, description="the latest known period: the forecast starts the period after it"
    )
    trained_until: date | None = Field(None, description="the version's last training period")
    actuals_used: int = Field(0, description="ingested actuals between training end and origin")
    correction: float | None = Field(
        None, description="intercept-correction factor applied (actuals.correction: ratio)"
    )
    baseline: list[ForecastPoint] | None = Field(
        None, description="what-if only: the forecast with carried-forward regressor values"
    )
    notes: list[str] = Field(default_factory=list)


class ActualsRequest(BaseModel):
    """Realised actuals in the task's own columns (series keys, date, target, declared
    regressors); validated like training data, stored idempotently per series and period."""

    model_config = ConfigDict(extra="forbid")

    rows: list[dict[KeyName, Any]] = Field(min_length=1, description="one actual per row")
    source: str | None = Field(None, max_length=200, description="who sent them (audit trail)")


class ActualsResponse(BaseModel):
    task: str
    rows: int
    inserted: int
    updated: int = Field(description="late corrections (old value kept in the audit trail)")
    unchanged: int


class StockPosition(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    series: dict[KeyName, KeyValue] = Field(min_length=1, max_length=16)
    on_hand: float = Field(ge=0, le=1e12, description="units on hand now")


class StockAlertsRequest(BaseModel):
    """On-hand stock per series; none given: the task's declared ``inventory.positions`` file."""

    model_config = ConfigDict(extra="forbid")

    positions: list[StockPosition] | None = Field(None, max_length=100_000)


class StockAlert(BaseModel):
    id: int
    status: Literal["new", "acknowledged", "resolved"]
    series: dict[str, int | str]
    on_hand: float
    probability: float = Field(description="P(stockout within the lead time)")
    expected_stockout: date | None = Field(description="first period demand exceeds the stock")
    periods_to_stockout: int | None = None
    shortfall: float = Field(description="expected units short by the end of the lead time")
    shortfall_at_service_level: float
    severity: Literal["critical", "warning", "info"]
    model_version: str
    origin: date | None = None


class StockAlertsResponse(BaseModel):
    task: str
    model_version: str
    lead_time: int
    alert_probability: float
    evaluated: int
    alerts: list[StockAlert]


class FeedbackRequest(BaseModel):
    """The actual outcome of a prediction, by ``prediction_id`` or by ``order_id`` (the request's
    id: its latest prediction). For a classification task, ``actual`` is 1 for the positive
    class, else 0; for a regression task, the observed value."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    prediction_id: str | None = Field(None, min_length=1, max_length=64)
    order_id: str | None = Field(None, min_length=1, max_length=128)
    actual: float

    @model_validator(mode="after")
    def _exactly_one_key(self) -> FeedbackRequest:
        if (self.prediction_id is None) == (self.order_id is None):
            raise ValueError("give exactly one of prediction_id or order_id")
        return self


class FeedbackResponse(BaseModel):
    prediction_id: str
    actual: float
    status: Literal["stored", "updated", "unchanged"]
    previous: float | None = None


class ServedModel(BaseModel):
    task: str
    kind: str | None = None
    routes: list[str] = Field(default_factory=list, description="the task's HTTP routes")
    registered_name: str
    alias: str
    version: str | None = Field(None, description="version being served (None: nothing loaded)")
    serving_since: datetime | None = None
    run_id: str | None = None
    path: str | None = Field(None, description="fast path or pipeline path, and why")
    alias_points_to: str | None = None
    last_checked_at: datetime | None = None
    last_error: str | None = None
    last_error_version: str | None = None
    last_error_at: datetime | None = None
    swaps: int = 0
    wakes: int = Field(
        0, description="verified registry events (MLflow alias webhooks) that woke this alias"
    )
    challenger: dict[str, Any] | None = Field(
        None,
        description="the task's challenger online (serving.challenger): its alias and version, "
        "load error, canary fraction and answers, shadow scored / dropped / errors / latency",
    )


class PredictionLogStatus(BaseModel):
    enabled: bool
    writer: str | None = None  # "process <pid>" or "thread"
    writer_restarts: int = 0
    written: int = 0
    pending: int = 0
    dropped: int = 0
    failed_writes: int = 0
    last_error: str | None = None


class VersionsResponse(BaseModel):
    models: list[ServedModel]
    poll_interval_s: float
    push: bool = Field(
        False, description="swaps are also pushed by the registry (a webhook secret is set)"
    )
    prediction_log: PredictionLogStatus
