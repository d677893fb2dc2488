"""The Shelfwise BentoML service: delay risk (one order, or a batch with adaptive batching),
demand forecast (one series, with inventory advice), feedback, served versions and admin reload;
follows ``models:/<name>@champion`` of each task and hot-swaps.

Run it with ``shelfwise serve`` or ``bentoml serve shelfwise.serving.service:ShelfwiseService``.
Configuration: configs/platform.yaml (tracking URI, store URL, port, API key) and
configs/serving.yaml (polling, batching, auth, prediction log); environment variables override
(SHELFWISE_TRACKING_URI, SHELFWISE_STORE_URL, SHELFWISE_API_KEY, SHELFWISE_POLL_INTERVAL_S, ...).
``SHELFWISE_PLATFORM_CONFIG`` / ``SHELFWISE_SERVING_CONFIG`` name other YAML files.

BentoML's own /healthz (/livez), /readyz (ready once a delay-risk version is loaded) and /metrics
(Prometheus) are served as usual; OpenAPI docs at / and /docs.json. A task whose champion does not
exist yet is not an error: the service starts, its endpoint answers 503 naming the model and
alias, /v1/versions shows it as not loaded, and polling picks the champion up once it appears.

Nothing is loaded at import: BentoML's decorators need the worker/batching numbers when the class
is defined, so those few values are read from configs/serving.yaml here; models, store and threads
are created in ``__init__`` of each worker.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import InvalidArgument, NotFound, ServiceUnavailable
from pydantic import Field
from starlette.responses import JSONResponse

from shelfwise.configs.delay import load_delay_config
from shelfwise.configs.platform import PlatformConfig, load_platform_config
from shelfwise.configs.serving import ServingSettings, load_serving_config
from shelfwise.monitoring.log_writer import ProcessBatchWriter
from shelfwise.monitoring.store import (
    BufferedPredictionLogger,
    PredictionRecord,
    PredictionStore,
    UnknownPredictionError,
    new_prediction_id,
)
from shelfwise.registry.load import (
    LoadedDelayModel,
    LoadedForecastModel,
    load_delay_model,
    load_forecast_model,
    registry_client,
    resolve_alias,
)
from shelfwise.serving.auth import ApiKeyMiddleware, protected_routes
from shelfwise.serving.follow import AliasFollower
from shelfwise.serving.forecast import (
    ForecastInputError,
    forecast_record,
    forecast_response,
    periods_needed,
    series_keys,
)
from shelfwise.serving.guard import UnavailableGuard
from shelfwise.serving.heap import settle_heap
from shelfwise.serving.schemas import (
    DelayOrder,
    DelayRiskResponse,
    FeedbackRequest,
    FeedbackResponse,
    ForecastRequest,
    ForecastResponse,
    PredictionLogStatus,
    ServedModel,
    VersionsResponse,
)

logger = logging.getLogger(__name__)

DELAY_ROUTE = "/v1/delay-risk"
DELAY_BATCH_ROUTE = "/v1/delay-risk/batch"
FORECAST_ROUTE = "/v1/forecast"
FEEDBACK_ROUTE = "/v1/feedback"
VERSIONS_ROUTE = "/v1/versions"
RELOAD_ROUTE = "/v1/admin/reload"
PREDICTION_ROUTES = (DELAY_ROUTE, DELAY_BATCH_ROUTE, FORECAST_ROUTE)
ADMIN_ROUTES = (FEEDBACK_ROUTE, RELOAD_ROUTE)


def platform_config() -> PlatformConfig:
    return load_platform_config(os.environ.get("SHELFWISE_PLATFORM_CONFIG", "platform"))


def serving_config() -> ServingSettings:
    return load_serving_config(os.environ.get("SHELFWISE_SERVING_CONFIG", "serving"))


def tracking_uri_for(platform: PlatformConfig) -> str:
    """The configured tracking server, else the local one `shelfwise server start` runs.
    Serving never starts a tracking server itself."""
    return platform.tracking.uri or f"http://{platform.tracking.host}:{platform.tracking.port}"


def service_options(settings: ServingSettings) -> dict[str, Any]:
    """BentoML service options; the benchmark's echo service uses the same ones."""
    return {
        "workers": settings.workers,
        "threads": settings.threads,
        "traffic": {"timeout": settings.timeout_s},
    }


_BOOT = serving_config()  # decorator arguments only (see module docstring)
BatchOfOrders = Annotated[
    list[DelayOrder], Field(min_length=1, max_length=_BOOT.batching.max_batch_size)
]


@bentoml.service(name="shelfwise", **service_options(_BOOT))
class ShelfwiseService:
    def __init__(self) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for name in ("serving", "registry", "monitoring"):  # swaps and flushes in the server log
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.INFO)
        self.settings = serving_config()
        self.platform = platform_config()
        self.tracking_uri = tracking_uri_for(self.platform)
        bands = load_delay_config().severity
        log_cfg = self.settings.prediction_log
        self.store: PredictionStore | None = None
        self.prediction_log: BufferedPredictionLogger | None = None
        self.log_writer: ProcessBatchWriter | None = None
        if log_cfg.enabled:
            self.store = PredictionStore(self.platform.store_url)  # feedback, and the tables
            if log_cfg.writer == "process":
                self.log_writer = ProcessBatchWriter(self.platform.store_url)
            self.prediction_log = BufferedPredictionLogger(
                self.store,
                flush_interval_ms=log_cfg.flush_interval_ms,
                max_batch_rows=log_cfg.max_batch_rows,
                max_queue_rows=log_cfg.max_queue_rows,
                write=self.log_writer,
            )
        client = registry_client(self.tracking_uri)

        def follower(task: str, cfg: Any, load: Any) -> AliasFollower[Any]:
            """Follow ``cfg.registered_name@cfg.alias``; ``load(uri, name, version)``."""
            return AliasFollower(
                task=task,
                registered_name=cfg.registered_name,
                alias=cfg.alias,
                resolve=partial(resolve_alias, client, cfg.registered_name, cfg.alias),
                load=partial(load, self.tracking_uri, cfg.registered_name),
                poll_interval_s=self.settings.poll_interval_s,
            )

        self.delay: AliasFollower[LoadedDelayModel] = follower(
            "delay_risk", self.settings.delay_risk, partial(load_delay_model, bands=bands)
        )
        self.forecaster: AliasFollower[LoadedForecastModel] = follower(
            "demand_forecast", self.settings.demand_forecast, load_forecast_model
        )
        # The versions and reload endpoints cover every follower; readiness waits only for the
        # delay-risk model (a missing forecast champion leaves /v1/forecast answering 503).
        self.followers: dict[str, AliasFollower[Any]] = {
            "delay_risk": self.delay,
            "demand_forecast": self.forecaster,
        }
        for follower in self.followers.values():
            follower.check()  # load the champion now; if it is absent, polling picks it up later
        settle_heap()  # the long-lived heap leaves the collector's way (serving/heap.py)
        for follower in self.followers.values():
            follower.on_swap = settle_heap  # later swaps settle it again (one settle at start-up)
            follower.start()
        logger.info(
            "shelfwise service: tracking %s, store %s, delay-risk version %s, forecast version %s",
            self.tracking_uri,
            self.store,
            self.delay.current.version if self.delay.current else "none yet",
            self.forecaster.current.version if self.forecaster.current else "none yet",
        )

    # -- BentoML hooks ------------------------------------------------------------------------

    def __is_ready__(self) -> bool:
        return self.delay.current is not None

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        for follower in self.followers.values():
            follower.stop()
        if self.prediction_log is not None:
            self.prediction_log.close()  # writes every queued prediction
        if self.log_writer is not None:
            self.log_writer.close()  # after the last batch is committed
        if self.store is not None:
            self.store.dispose()

    # -- delay risk ---------------------------------------------------------------------------

    def _model(self) -> LoadedDelayModel:
        model = self.delay.current  # read once: this request keeps this version to the end
        if model is None:
            raise ServiceUnavailable(_not_loaded(self.delay))
        return model

    def _unavailable(self, follower: AliasFollower[Any]) -> JSONResponse:
        """503 with the reason in the body (BentoML hides the message of a raised 5xx)."""
        return JSONResponse(
            {"error": _not_loaded(follower)},
            status_code=503,
            headers={"Retry-After": str(self.retry_after_s())},
        )

    def retry_after_s(self) -> int:
        return max(1, round(self.settings.poll_interval_s))

    def delay_unavailable(self) -> str | None:
        """Why delay risk cannot be answered now (None: it can)."""
        return None if self.delay.current is not None else _not_loaded(self.delay)

    def _log(self, records: list[PredictionRecord]) -> None:
        if self.prediction_log is None:
            return
        try:
            self.prediction_log.log_many(records)
        except RuntimeError:  # closed: only during shutdown, after in-flight requests drained
            logger.error("prediction log already closed: %s predictions not logged", len(records))

    @bentoml.api(route=DELAY_ROUTE)
    async def delay_risk(self, order: DelayOrder, /) -> DelayRiskResponse:
        """Delay risk of one order: probability of late delivery, severity band, model version."""
        model = self.delay.current  # read once: this request keeps this version to the end
        if model is None:
            return self._unavailable(self.delay)  # type: ignore[return-value]
        row = order.model_row()
        probability = model.predict_one(row)
        response = DelayRiskResponse(
            prediction_id=new_prediction_id(),
            order_id=order.order_id,
            delay_probability=probability,
            severity=model.severity(probability),
            model_version=model.version,
        )
        self._log([_record(model, order, row, response)])
        return response

    @bentoml.api(
        route=DELAY_BATCH_ROUTE,
        batchable=True,
        max_batch_size=_BOOT.batching.max_batch_size,
        max_latency_ms=_BOOT.batching.max_latency_ms,
    )
    async def delay_risk_batch(self, orders: BatchOfOrders) -> list[DelayRiskResponse]:
        """Delay risk of a list of orders, body ``{"orders": [...]}`` (BentoML's adaptive batching
        merges concurrent requests into one model call)."""
        model = self._model()
        rows = [o.model_row() for o in orders]
        probabilities = model.predict_many(rows)
        now = datetime.now(UTC)
        responses = []
        records = []
        for order, row, p in zip(orders, rows, probabilities, strict=True):
            probability = float(p)
            response = DelayRiskResponse(
                prediction_id=new_prediction_id(),
                order_id=order.order_id,
                delay_probability=probability,
                severity=model.severity(probability),
                model_version=model.version,
            )
            responses.append(response)
            records.append(_record(model, order, row, response, now))
        self._log(records)
        return responses

    # -- demand forecast ----------------------------------------------------------------------

    @bentoml.api(route=FORECAST_ROUTE)
    def forecast(self, request: ForecastRequest, /) -> ForecastResponse:
        """Demand forecast of one series for the next ``horizon`` periods: dates, point forecast,
        interval, model version and its gate metrics; with ``lead_time`` and ``service_level``
        also safety stock and reorder point, and with ``on_hand`` the stockout probability."""
        model = self.forecaster.current  # read once: this request keeps this version
        if model is None:
            return self._unavailable(self.forecaster)  # type: ignore[return-value]
        try:
            keys = series_keys(model, request.series)
            periods = periods_needed(model, request)
        except ForecastInputError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)  # type: ignore[return-value]
        frame = model.forecast(keys, periods)
        response = forecast_response(model, request, keys, frame, new_prediction_id())
        self._log([forecast_record(model, request, response, datetime.now(UTC))])
        return response

    # -- feedback, versions, admin ------------------------------------------------------------

    @bentoml.api(route=FEEDBACK_ROUTE, input_spec=FeedbackRequest)
    def feedback(
        self, prediction_id: str | None = None, order_id: str | None = None, actual: float = 0.0
    ) -> FeedbackResponse:
        """Ground truth for a prediction (by prediction_id, or the latest one of an order_id).
        Idempotent: sending the same value again reports ``unchanged``. Needs the API key."""
        if self.store is None:
            raise InvalidArgument("the prediction log is disabled on this server")
        try:
            result = self._record_feedback(prediction_id, order_id, actual)
        except UnknownPredictionError as exc:
            raise NotFound(str(exc)) from None
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        return FeedbackResponse(
            prediction_id=result.prediction_id,
            actual=result.actual,
            status=result.status,
            previous=result.previous,
        )

    def _record_feedback(self, prediction_id: str | None, order_id: str | None, actual: float):
        assert self.store is not None
        try:
            return self.store.record_feedback(prediction_id, order_id, actual)
        except UnknownPredictionError:
            # the prediction may still be waiting in the log's queue: write it, then retry once
            if self.prediction_log is None or not self.prediction_log.flush(timeout=10):
                raise
            return self.store.record_feedback(prediction_id, order_id, actual)

    @bentoml.api(route=VERSIONS_ROUTE)
    async def versions(self) -> VersionsResponse:
        """Which versions are served, since when, what the alias points to, the last load error.
        (Each worker follows the alias on its own; this is the answering worker's view.)"""
        return self._versions()

    def _versions(self) -> VersionsResponse:
        models = []
        fields = ServedModel.model_fields
        for follower in self.followers.values():
            status = follower.status()
            current = follower.current
            models.append(
                ServedModel(
                    **{k: getattr(status, k) for k in fields if hasattr(status, k)},
                    run_id=getattr(current, "run_id", None),
                    path=getattr(current, "fast_path_note", None),
                )
            )
        log = self.prediction_log
        log_status = PredictionLogStatus(enabled=log is not None)
        if log is not None:
            proc = self.log_writer
            log_status = PredictionLogStatus(
                enabled=True,
                writer=f"process {proc.pid}" if proc is not None else "thread",
                writer_restarts=proc.restarts if proc is not None else 0,
                written=log.written,
                pending=log.pending,
                dropped=log.dropped,
                failed_writes=log.failed_writes,
                last_error=log.last_error,
            )
        return VersionsResponse(
            models=models,
            poll_interval_s=self.settings.poll_interval_s,
            prediction_log=log_status,
        )

    @bentoml.api(route=RELOAD_ROUTE)
    def reload(self) -> VersionsResponse:
        """Check every alias now and reload its version (even if unchanged). Needs the API key.
        A failed load keeps the old version serving and is reported in the answer."""
        for follower in self.followers.values():
            follower.check(force=True)
        return self._versions()


def _not_loaded(follower: AliasFollower[Any]) -> str:
    status = follower.status()
    if status.last_error and status.last_error_version is None:  # the registry did not answer
        why = status.last_error
    elif status.alias_points_to is None:
        why = f"{follower.label} does not exist (no registered version has that alias)"
    else:
        why = f"{follower.label} (version {status.alias_points_to}) is not loaded"
        if status.last_error:
            why += f": {status.last_error}"
    return f"no {follower.task} model is served: {why}; see {VERSIONS_ROUTE}"


def _record(
    model: LoadedDelayModel,
    order: DelayOrder,
    row: dict[str, Any],
    response: DelayRiskResponse,
    created_at: datetime | None = None,
) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=response.prediction_id,
        created_at=created_at or datetime.now(UTC),
        model_name=model.registered_name,
        model_version=model.version,
        order_id=order.order_id,
        inputs=order.logged_inputs(row),
        outputs={"delay_probability": response.delay_probability, "severity": response.severity},
    )


def _current() -> ShelfwiseService:
    return bentoml.get_current_service()  # type: ignore[return-value]


ShelfwiseService.add_asgi_middleware(
    ApiKeyMiddleware,
    routes=protected_routes(_BOOT, ADMIN_ROUTES, PREDICTION_ROUTES),
    settings_loader=serving_config,
    platform_loader=platform_config,
)
# After the API-key check: Starlette runs the first registered middleware first.
ShelfwiseService.add_asgi_middleware(
    UnavailableGuard,
    routes=(DELAY_BATCH_ROUTE,),
    reason=lambda: _current().delay_unavailable(),
    retry_after_s=lambda: _current().retry_after_s(),
)
