"""The Shelfwise BentoML service: one service for every declared task (configs/tasks/*.yaml),
each following ``models:/<registered model>@<alias>`` and hot-swapping; plus feedback, served
versions and admin reload.

Routes, per task with ``serving.enabled`` (``<path>`` is ``task.url_path``):

- classification / regression: ``POST /v1/<path>/predict`` (one row) and ``/v1/<path>/batch``
  (``{<serving.batch_field>: [...]}``, BentoML adaptive batching). Request and response models
  are generated from the task's dataset spec (serving/task_api.py), so each route has typed
  OpenAPI with an example and a 4xx naming the field; ``explain: true`` adds the top feature
  contributions (serving/explain.py);
- forecast: ``POST /v1/<path>/forecast`` with the inventory advice;
- each task's ``serving.legacy_routes`` answer with the same handlers under older paths.

The routes are made when this module is imported: BentoML reads a service's APIs off its class,
so ``_task_apis()`` builds, for every route, a function whose annotations are the generated
models, wraps it in ``bentoml.api(route=...)``, sets it on the class, and only then is
``bentoml.service`` applied. The task declarations (``SHELFWISE_TASKS_DIR`` names another folder)
and the first rows of each data file (the examples) are read then, like configs/serving.yaml.

Run it with ``shelfwise serve`` or ``bentoml serve shelfwise.serving.service:ShelfwiseService``.
Configuration: configs/platform.yaml (tracking URI, store URL, port, API key) and
configs/serving.yaml (polling, batching, auth, prediction log); environment variables override
(SHELFWISE_TRACKING_URI, SHELFWISE_STORE_URL, SHELFWISE_API_KEY, SHELFWISE_POLL_INTERVAL_S, ...).
``SHELFWISE_PLATFORM_CONFIG`` / ``SHELFWISE_SERVING_CONFIG`` name other YAML files.

BentoML's own /healthz (/livez), /readyz and /metrics (Prometheus) are served as usual; OpenAPI
docs at / and /docs.json. /readyz is ready once at least one model is loaded and every task whose
alias exists is loaded. A task whose champion does not exist yet is not an error: the service
starts, its endpoints answer 503 naming the model and alias, /v1/versions shows it as not loaded,
and polling picks the champion up once it appears. Models, store and threads are created in
``__init__`` of each worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from datetime import UTC, datetime
from functools import partial
from typing import Any

import bentoml
import pandas as pd
from bentoml.exceptions import InvalidArgument, NotFound, ServiceUnavailable
from pydantic import BaseModel
from starlette.responses import JSONResponse

from shelfwise.configs.platform import PlatformConfig, load_platform_config
from shelfwise.configs.serving import ServingSettings, load_serving_config
from shelfwise.configs.tasks import TaskDeclaration, TaskKind, load_tasks
from shelfwise.configs.tenants import DEFAULT_TENANT, load_tenants
from shelfwise.monitoring.actuals import ActualsError, ActualsStore
from shelfwise.monitoring.log_writer import ProcessBatchWriter
from shelfwise.monitoring.store import (
    BufferedPredictionLogger,
    PredictionRecord,
    PredictionStore,
    UnknownPredictionError,
    new_prediction_id,
)
from shelfwise.registry.load import (
    LoadedForecastModel,
    LoadedTabularModel,
    load_forecast_model,
    load_tabular_model,
    registry_client,
    resolve_alias,
)
from shelfwise.serving.auth import (
    RateLimiter,
    TenantAuthMiddleware,
    principal_of,
    route_policies,
)
from shelfwise.serving.current import LiveForecasts, as_frame, points, stock_alerts
from shelfwise.serving.explain import explain_row
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
from shelfwise.serving.keys import KeyAuthenticator, KeyStore
from shelfwise.serving.online import OnlineTask, Scored, online_task
from shelfwise.serving.push import AliasEvent, RegistryEventReceiver, WakeSignal, signal_path
from shelfwise.serving.schemas import (
    ActualsRequest,
    ActualsResponse,
    FeedbackRequest,
    FeedbackResponse,
    ForecastResponse,
    PredictionLogStatus,
    ServedModel,
    StockAlertsRequest,
    StockAlertsResponse,
    VersionsResponse,
)
from shelfwise.serving.task_api import (
    Contribution,
    ExplanationInfo,
    ForecastApi,
    TabularApi,
    forecast_api,
    tabular_api,
    task_routes,
)

logger = logging.getLogger(__name__)

FEEDBACK_ROUTE = "/v1/feedback"
VERSIONS_ROUTE = "/v1/versions"
RELOAD_ROUTE = "/v1/admin/reload"
ADMIN_ROUTES = (FEEDBACK_ROUTE, RELOAD_ROUTE)
EXPLAIN_TOP_K = 5  # contributions in an answer (the largest by absolute value)


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


def served_tasks() -> list[TaskDeclaration]:
    """The declared tasks the service serves (``serving.enabled``), sorted by name."""
    return [task for task in load_tasks() if task.serving.enabled]


_BOOT = serving_config()  # decorator arguments only (see module docstring)
TASKS: dict[str, TaskDeclaration] = {task.name: task for task in served_tasks()}
TABULAR: dict[str, TabularApi] = {
    name: tabular_api(task, _BOOT.batching.max_batch_size)
    for name, task in TASKS.items()
    if task.kind is not TaskKind.forecast
}
FORECASTS: dict[str, ForecastApi] = {
    name: forecast_api(task) for name, task in TASKS.items() if task.kind is TaskKind.forecast
}
ROUTES: dict[str, dict[str, list[str]]] = {name: task_routes(t) for name, t in TASKS.items()}
PREDICTION_ROUTES = tuple(r for routes in ROUTES.values() for rs in routes.values() for r in rs)
BATCH_ROUTES: dict[str, str] = {  # route -> task
    r: name for name, routes in ROUTES.items() for r in routes.get("batch", [])
}
_ROUTE_TASKS: dict[str, str] = {
    r: name for name, routes in ROUTES.items() for rs in routes.values() for r in rs
}
if len(_ROUTE_TASKS) != len(PREDICTION_ROUTES):
    raise ValueError(f"two tasks declare the same route: {sorted(PREDICTION_ROUTES)}")
TENANTS = load_tenants()  # configs/tenants.yaml (SHELFWISE_TENANTS_CONFIG)
OWNERS: dict[str, str] = TENANTS.owners(TASKS)  # task -> tenant (unowned tasks: 404 to all)
for _task in sorted(set(TASKS) - set(OWNERS)):
    logger.warning("task %s is owned by no tenant (configs/tenants.yaml): 404 to every key", _task)


def request_tenant(ctx: Any) -> str:
    """The tenant of the request's key; an anonymous request is the default tenant's."""
    request = getattr(ctx, "request", None)
    principal = principal_of(request.state) if request is not None else None
    return principal.tenant if principal is not None else DEFAULT_TENANT


def key_authenticator() -> KeyAuthenticator:
    """The worker's key check: tenants' keys from the store, plus the shared key."""
    settings, platform = serving_config(), platform_config()
    store = KeyStore(platform.store_url)
    return KeyAuthenticator(
        store, settings.api_key(platform.serving.api_key), settings.auth.key_cache_ttl_s
    )


def rate_limiter() -> RateLimiter:
    limit = serving_config().auth.rate_limit
    return RateLimiter(limit.requests_per_s, limit.burst)


# forecast tasks: realised actuals in (API key, like feedback)
ACTUALS_ROUTES: dict[str, str] = {name: f"/v1/{TASKS[name].url_path}/actuals" for name in FORECASTS}
ALERT_ROUTES: dict[str, str] = {
    name: f"/v1/{TASKS[name].url_path}/stock-alerts" for name in FORECASTS
}


class ShelfwiseService:
    """Every declared task's champion (the per-task routes are added below the class)."""

    def __init__(self) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for name in ("shelfwise.serving", "shelfwise.registry", "shelfwise.monitoring"):
            # swaps, pushed events and flushes in the server log
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.INFO)
        self.settings = serving_config()
        self.platform = platform_config()
        self.tracking_uri = tracking_uri_for(self.platform)
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
        self.live: LiveForecasts | None = None
        if self.store is not None:
            self.live = LiveForecasts(ActualsStore(self.store.engine))
        client = registry_client(self.tracking_uri)
        # one follower per served task; versions, reload and readiness cover all of them
        self.followers: dict[str, AliasFollower[Any]] = {}
        for task in TASKS.values():
            name, alias = task.registered_model, task.serving.alias
            self.followers[task.name] = AliasFollower(
                task=task.name,
                registered_name=name,
                alias=alias,
                resolve=partial(resolve_alias, client, name, alias),
                load=partial(_loader(task), self.tracking_uri, name),
                poll_interval_s=self.settings.poll_interval_s,
            )
        # per tabular task: who answers a row, and the challenger's shadow (serving/online.py)
        self.online: dict[str, OnlineTask] = {
            name: online_task(
                task,
                client,
                self.tracking_uri,
                self.settings.poll_interval_s,
                _loader(task),
                OWNERS.get(name, DEFAULT_TENANT),
                self._log,
            )
            for name, task in TASKS.items()
            if name in TABULAR
        }
        # swaps pushed by the registry: a verified alias event wakes these at once; the shared
        # signal files tell the followers of the other workers (serving/push.py)
        self.push_secret = self.settings.push.secret()
        if self.push_secret:
            folder = self.platform.state_path / "run" / "push"
            for follower in self.all_followers():
                follower.signal = WakeSignal(
                    signal_path(folder, follower.registered_name, follower.alias)
                )
                follower.signal_tick_s = self.settings.push.signal_tick_s
        for follower in self.followers.values():
            follower.check()  # load the champion now; if it is absent, polling picks it up later
        for online in self.online.values():
            online.start()  # the challenger, when the task declares shadow or canary
        settle_heap()  # the long-lived heap leaves the collector's way (serving/heap.py)
        for follower in self.followers.values():
            follower.on_swap = settle_heap  # later swaps settle it again (one settle at start-up)
            follower.start()
        logger.info(
            "shelfwise service: tracking %s, store %s, serving %s",
            self.tracking_uri,
            self.store,
            ", ".join(
                f"{t} v{f.current.version if f.current else ' none yet'}"
                for t, f in self.followers.items()
            )
            or "no task (none declared)",
        )

    def all_followers(self) -> list[AliasFollower[Any]]:
        """The champions' followers and the challengers' (shadow/canary) ones."""
        challengers = [o.follower for o in self.online.values() if o.follower is not None]
        return [*self.followers.values(), *challengers]

    def registry_event(self, event: AliasEvent) -> list[str]:
        """A verified alias event: wake every follower of that alias; their labels."""
        woken = []
        for follower in self.all_followers():
            if (follower.registered_name, follower.alias) == (event.name, event.alias):
                follower.wake()
                woken.append(follower.label)
        return woken

    # -- BentoML hooks ------------------------------------------------------------------------

    def __is_ready__(self) -> bool:
        """At least one model is loaded, and every task whose alias exists is loaded."""
        followers = list(self.followers.values())
        loaded = [f.current is not None for f in followers]
        pending = [f.current is None and f.alias_points_to is not None for f in followers]
        return any(loaded) and not any(pending)

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        for follower in self.followers.values():
            follower.stop()
        for online in self.online.values():
            online.stop()
        if self.prediction_log is not None:
            self.prediction_log.close()  # writes every queued prediction
        if self.log_writer is not None:
            self.log_writer.close()  # after the last batch is committed
        if self.store is not None:
            self.store.dispose()

    # -- shared helpers -----------------------------------------------------------------------

    def _unavailable(self, follower: AliasFollower[Any]) -> JSONResponse:
        """503 with the reason in the body (BentoML hides the message of a raised 5xx)."""
        return JSONResponse(
            {"error": _not_loaded(follower)},
            status_code=503,
            headers={"Retry-After": str(self.retry_after_s())},
        )

    def retry_after_s(self) -> int:
        return max(1, round(self.settings.poll_interval_s))

    def unavailable_reason(self, route: str) -> str | None:
        """Why the task behind ``route`` cannot be answered now (None: it can)."""
        task = _ROUTE_TASKS.get(route)
        follower = self.followers.get(task) if task else None
        if follower is None or follower.current is not None:
            return None
        return _not_loaded(follower)

    def _log(self, records: list[PredictionRecord]) -> None:
        if self.prediction_log is None:
            return
        try:
            self.prediction_log.log_many(records)
        except RuntimeError:  # closed: only during shutdown, after in-flight requests drained
            logger.error("prediction log already closed: %s predictions not logged", len(records))

    # -- tabular tasks ------------------------------------------------------------------------

    async def _predict(self, task: str, request: BaseModel) -> Any:
        follower = self.followers[task]
        champion: LoadedTabularModel | None = follower.current  # read once: kept to the end
        if champion is None:
            return self._unavailable(follower)
        api = TABULAR[task]
        row = api.row(request)
        online = self.online[task]
        try:  # the champion, or the challenger for a canary entity
            (scored,) = online.score(champion, [api.request_id(request)], [row])
        except ValueError as exc:
            return _cannot_score(api, champion, [row], exc)
        model: LoadedTabularModel = scored.model
        explained = None
        if getattr(request, "explain", False):
            explained = await asyncio.to_thread(_explain, api, model, row)
        response = _tabular_response(api, model, request, scored.value, explained)
        record = _record(api, scored, row, response)
        self._log([record])
        online.shadow(champion, [scored], [row], [record])
        return response

    async def _batch(self, task: str, requests: list[BaseModel]) -> list[Any]:
        follower = self.followers[task]
        champion: LoadedTabularModel | None = follower.current
        if champion is None:  # the guard answers first; this is the race after a failed swap
            raise ServiceUnavailable(_not_loaded(follower))
        api = TABULAR[task]
        rows = [api.row(r) for r in requests]
        online = self.online[task]
        try:
            scored = online.score(champion, [api.request_id(r) for r in requests], rows)
        except ValueError as exc:
            raise InvalidArgument(_cannot_score(api, champion, rows, exc).body.decode()) from None
        now = datetime.now(UTC)
        responses, records = [], []
        for request, row, s in zip(requests, rows, scored, strict=True):
            explained = None
            if getattr(request, "explain", False):
                explained = await asyncio.to_thread(_explain, api, s.model, row)
            response = _tabular_response(api, s.model, request, s.value, explained)
            responses.append(response)
            records.append(_record(api, s, row, response, now))
        self._log(records)
        online.shadow(champion, scored, rows, records)
        return responses

    # -- forecast tasks -----------------------------------------------------------------------

    def _forecast(self, task: str, request: Any) -> Any:
        follower = self.followers[task]
        model: LoadedForecastModel | None = follower.current  # read once: kept to the end
        if model is None:
            return self._unavailable(follower)
        declaration = TASKS[task]
        try:
            keys = series_keys(model, request.series)
            periods = periods_needed(model, request)
            current = None
            if self.live is not None:
                current = self.live.forecast(
                    task, model, keys, periods, request.regressors, declaration.actuals
                )
            elif request.regressors:
                raise ForecastInputError(
                    "what-if regressors need the store (prediction_log.enabled)", ("regressors",)
                )
        except ForecastInputError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        if current is None:  # nothing after the training data: the precomputed window
            frame = model.forecast(keys, periods)
            response = forecast_response(model, request, keys, frame, new_prediction_id())
            trained = pd.Timestamp(frame["date"].iloc[0]) - _period(model)
            extra: dict[str, Any] = {"origin": trained.date(), "trained_until": trained.date()}
        else:
            sid = self.live.index(model).sid[tuple(keys[k] for k in model.key_columns)]  # type: ignore[union-attr]
            frame = as_frame(model, sid, current.forecast)
            response = forecast_response(model, request, keys, frame, new_prediction_id())
            extra = {
                "origin": current.origin.date(),
                "trained_until": current.trained_until.date(),
                "actuals_used": current.actuals_used,
                "correction": current.correction if current.actuals_used else None,
                "notes": current.notes,
            }
            if current.baseline is not None:
                extra["baseline"] = points(as_frame(model, sid, current.baseline), request.horizon)
        response = response.model_copy(update={"task": task, **extra})
        record = forecast_record(model, request, response, datetime.now(UTC))
        self._log([dataclasses.replace(record, tenant=OWNERS.get(task, DEFAULT_TENANT))])
        return response

    def _actuals(self, task: str, request: ActualsRequest) -> Any:
        follower = self.followers[task]
        model: LoadedForecastModel | None = follower.current
        if model is None:  # the served version's series are what actuals are checked on
            return self._unavailable(follower)
        if self.live is None:
            raise InvalidArgument("the store is disabled on this server (prediction_log)")
        declaration = TASKS[task]
        try:
            result = self.live.ingest(
                task,
                model,
                FORECASTS[task].spec,
                request.rows,
                declaration.data.negative_target,
                declaration.actuals,
                request.source,
            )
        except ActualsError as exc:
            return JSONResponse(exc.body(), status_code=422)
        return ActualsResponse(
            task=task,
            rows=result.rows,
            inserted=result.inserted,
            updated=result.updated,
            unchanged=result.unchanged,
        )

    def _stock_alerts(self, task: str, request: StockAlertsRequest) -> Any:
        from shelfwise.monitoring.alerts import AlertStore
        from shelfwise.serving.alert_positions import positions_of

        follower = self.followers[task]
        model: LoadedForecastModel | None = follower.current
        if model is None:
            return self._unavailable(follower)
        declaration = TASKS[task]
        inventory = declaration.inventory
        try:
            if inventory is None:
                raise ForecastInputError(
                    f"task {task} declares no inventory (lead_time, service_level, "
                    "alert_probability) in its YAML",
                    ("inventory",),
                )
            positions = positions_of(model, request, inventory, self.platform.data_dir)
            risks = stock_alerts(self.live, task, model, positions, inventory, declaration.actuals)
        except ForecastInputError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        alerts = []
        if self.store is not None:
            alerts = AlertStore(self.store.engine).record(task, risks, model.key_columns)
        alerts.sort(key=lambda a: -a["probability"])
        return StockAlertsResponse(
            task=task,
            model_version=model.version,
            lead_time=inventory.lead_time,
            alert_probability=inventory.alert_probability,
            evaluated=len(risks),
            alerts=[{k: v for k, v in a.items() if k not in ("alert", "opened")} for a in alerts],
        )

    # -- feedback, versions, admin ------------------------------------------------------------

    @bentoml.api(route=FEEDBACK_ROUTE, input_spec=FeedbackRequest)
    def feedback(
        self,
        ctx: bentoml.Context,
        prediction_id: str | None = None,
        order_id: str | None = None,
        actual: float = 0.0,
    ) -> FeedbackResponse:
        """Ground truth for a prediction (by prediction_id, or the latest one of an order_id).
        Idempotent: sending the same value again reports ``unchanged``. Needs a key with the
        feedback scope; only the key's tenant's predictions are found (others: 404)."""
        if self.store is None:
            raise InvalidArgument("the prediction log is disabled on this server")
        tenant = request_tenant(ctx)
        try:
            result = self._record_feedback(prediction_id, order_id, actual, tenant)
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

    def _record_feedback(
        self,
        prediction_id: str | None,
        order_id: str | None,
        actual: float,
        tenant: str = DEFAULT_TENANT,
    ):
        assert self.store is not None
        try:
            return self.store.record_feedback(prediction_id, order_id, actual, tenant=tenant)
        except UnknownPredictionError:
            # the prediction may still be waiting in the log's queue: write it, then retry once
            if self.prediction_log is None or not self.prediction_log.flush(timeout=10):
                raise
            return self.store.record_feedback(prediction_id, order_id, actual, tenant=tenant)

    @bentoml.api(route=VERSIONS_ROUTE)
    async def versions(self, ctx: bentoml.Context) -> VersionsResponse:
        """Which versions are served, since when, what the alias points to, the last load error.
        (Each worker follows the alias on its own; this is the answering worker's view.) Only
        the tasks of the key's tenant (no key: the default tenant's)."""
        return self._versions(request_tenant(ctx))

    def _tenant_followers(self, tenant: str) -> list[AliasFollower[Any]]:
        return [f for t, f in self.followers.items() if OWNERS.get(t) == tenant]

    def _versions(self, tenant: str = DEFAULT_TENANT) -> VersionsResponse:
        models = []
        fields = ServedModel.model_fields
        for follower in self._tenant_followers(tenant):
            status = follower.status()
            current = follower.current
            task = TASKS[follower.task]
            models.append(
                ServedModel(
                    **{k: getattr(status, k) for k in fields if hasattr(status, k)},
                    kind=task.kind.value,
                    routes=[r for rs in ROUTES[task.name].values() for r in rs],
                    run_id=getattr(current, "run_id", None),
                    path=getattr(current, "fast_path_note", None),
                    challenger=(
                        self.online[task.name].status() if task.name in self.online else None
                    ),
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
            push=bool(self.push_secret),
            prediction_log=log_status,
        )

    @bentoml.api(route=RELOAD_ROUTE)
    def reload(self, ctx: bentoml.Context) -> VersionsResponse:
        """Check every alias of the key's tenant now and reload its version (even if
        unchanged). Needs a key with the admin scope. A failed load keeps the old version
        serving and is reported in the answer."""
        tenant = request_tenant(ctx)
        for follower in self._tenant_followers(tenant):
            follower.check(force=True)
            online = self.online.get(follower.task)
            if online is not None and online.follower is not None:
                online.follower.check()
        return self._versions(tenant)


def _period(model: LoadedForecastModel) -> Any:
    from shelfwise.models.forecast import period_step

    return period_step(model.frequency)


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


def _loader(task: TaskDeclaration) -> Any:
    """``load(tracking_uri, registered_name, version)`` for the task's kind."""
    if task.kind is TaskKind.forecast:
        return load_forecast_model
    bands = None
    if task.kind is TaskKind.classification:
        from shelfwise.configs.tabular_training import SeverityBands
        from shelfwise.configs.tasks import training_config

        try:
            bands = training_config(task).severity
        except Exception as exc:  # the severity bands are a nicety next to the probability
            logger.warning("task %s: default severity bands (%s)", task.name, exc)
            bands = SeverityBands()
    return partial(_load_tabular, kind=task.kind.value, bands=bands)


def _load_tabular(
    tracking_uri: str, registered_name: str, version: str, kind: str, bands: Any
) -> LoadedTabularModel:
    return load_tabular_model(tracking_uri, registered_name, version, kind=kind, bands=bands)


def _explain(api: TabularApi, model: LoadedTabularModel, row: dict[str, Any]) -> Any:
    return explain_row(model.pipeline, model.frame([row]), model.kind)


def _cannot_score(
    api: TabularApi, model: LoadedTabularModel, rows: list[dict[str, Any]], exc: Exception
) -> JSONResponse:
    """422 when the model refuses valid input: missing values (null) that this version cannot
    take (e.g. a linear pipeline without an imputer); other errors are the server's (5xx)."""
    missing = sorted({api.field_of_column[c] for r in rows for c, v in r.items() if v is None})
    if not missing:
        raise exc
    message = (
        f"{model.registered_name} v{model.version} cannot score missing values "
        f"({', '.join(missing)}): {exc}"
    )
    detail = [{"loc": [name], "msg": message} for name in missing]
    return JSONResponse({"error": message, "detail": detail}, status_code=422)


def _tabular_response(
    api: TabularApi,
    model: LoadedTabularModel,
    request: BaseModel,
    value: float,
    explained: Any = None,
) -> Any:
    out: dict[str, Any] = {
        "prediction_id": new_prediction_id(),
        "task": api.task.name,
        "model_version": model.version,
        "row_id": api.request_id(request),
        "prediction": value,
    }
    if model.kind == "classification":
        out["severity"] = model.severity(value)
    if explained is not None:
        out["contributions"] = [
            Contribution(feature=api.field_of_column.get(col, col), contribution=c)
            for col, c in explained.top(EXPLAIN_TOP_K)
        ]
        out["explanation"] = ExplanationInfo(
            method=explained.method, units=explained.units, base_value=explained.base_value
        )
    return api.response(**out)


def _record(
    api: TabularApi,
    scored: Scored,
    row: dict[str, Any],
    response: Any,
    created_at: datetime | None = None,
) -> PredictionRecord:
    """The stored row of one answer: who answered it (``scored``: version, role, model time)."""
    model = scored.model
    outputs: dict[str, Any] = {api.task.prediction_field: response.prediction}
    if getattr(response, "severity", None) is not None:
        outputs["severity"] = response.severity
    return PredictionRecord(
        prediction_id=response.prediction_id,
        created_at=created_at or datetime.now(UTC),
        model_name=model.registered_name,
        model_version=model.version,
        order_id=response.row_id,
        inputs=dict(row),
        outputs=outputs,
        tenant=OWNERS.get(api.task.name, DEFAULT_TENANT),
        role=scored.role,
        latency_ms=scored.latency_ms,
    )


def _current() -> ShelfwiseService:
    return bentoml.get_current_service()  # type: ignore[return-value]


# -- the per-task routes ----------------------------------------------------------------------


def _api_name(task: str, kind: str, i: int) -> str:
    return f"{task}_{kind}" if i == 0 else f"{task}_{kind}_legacy{i if i > 1 else ''}"


def _predict_api(task: str, api: TabularApi, name: str, route: str) -> Any:
    async def handler(self: ShelfwiseService, request: Any, /) -> Any:
        return await self._predict(task, request)

    handler.__annotations__ = {"request": api.request, "return": api.response}
    handler.__doc__ = (
        f"{api.task.kind.value.capitalize()} of one row for task {task}: "
        f"{api.task.prediction_field}"
        + (", severity" if api.task.kind is TaskKind.classification else "")
        + ", model version; with explain: true the top feature contributions. "
        + (api.task.description or "")
    )
    return _named(handler, name, route, bentoml.api(route=route))


def _batch_api(task: str, api: TabularApi, name: str, route: str, settings: Any) -> Any:
    async def handler(self: ShelfwiseService, rows: Any) -> Any:
        return await self._batch(task, rows)

    handler.__annotations__ = {"rows": list[api.request], "return": list[api.response]}
    handler.__doc__ = (
        f"Task {task} for a list of rows, body {{{api.batch_field!r}: [...]}} (BentoML's "
        "adaptive batching merges concurrent requests into one model call)."
    )
    decorator = bentoml.api(
        route=route,
        input_spec=api.batch_input,
        batchable=True,
        max_batch_size=settings.batching.max_batch_size,
        max_latency_ms=settings.batching.max_latency_ms,
    )
    return _named(handler, name, route, decorator)


def _forecast_api(task: str, api: ForecastApi, name: str, route: str) -> Any:
    def handler(self: ShelfwiseService, request: Any, /) -> Any:
        return self._forecast(task, request)

    handler.__annotations__ = {"request": api.request, "return": ForecastResponse}
    handler.__doc__ = (
        f"Forecast of one {task} series (keys {', '.join(api.spec.series_keys)}) for the next "
        "``horizon`` periods: dates, point forecast, interval, model version and its gate "
        "metrics; with ``lead_time`` and ``service_level`` also safety stock and reorder point, "
        "and with ``on_hand`` the stockout probability."
    )
    return _named(handler, name, route, bentoml.api(route=route))


def _actuals_api(task: str, name: str, route: str) -> Any:
    def handler(self: ShelfwiseService, request: ActualsRequest, /) -> Any:
        return self._actuals(task, request)

    handler.__annotations__ = {"request": ActualsRequest, "return": ActualsResponse}
    spec = FORECASTS[task].spec
    handler.__doc__ = (
        f"Realised actuals of task {task} (API key): rows of {', '.join(spec.series_keys)}, "
        f"{spec.time_column}, {spec.target}"
        + (f" and optionally {', '.join(spec.regressors)}" if spec.regressors else "")
        + ". Validated like training data (422 naming the row and column; nothing stored), "
        "idempotent per series and period; a changed value is a correction (audit trail)."
    )
    return _named(handler, name, route, bentoml.api(route=route))


def _alerts_api(task: str, name: str, route: str) -> Any:
    def handler(self: ShelfwiseService, request: StockAlertsRequest, /) -> Any:
        return self._stock_alerts(task, request)

    handler.__annotations__ = {"request": StockAlertsRequest, "return": StockAlertsResponse}
    handler.__doc__ = (
        f"Stock alerts of task {task} (API key): for the on-hand stock posted per series (or the "
        "declared inventory.positions file), the series whose stockout probability within the "
        "lead time exceeds inventory.alert_probability, with the expected day of stockout, the "
        "shortfall, a severity band and the forecast version; stored with a status."
    )
    return _named(handler, name, route, bentoml.api(route=route))


def _named(handler: Any, name: str, route: str, decorator: Any) -> Any:
    handler.__name__ = handler.__qualname__ = name
    return decorator(handler)


def _task_apis(settings: ServingSettings) -> dict[str, Any]:
    """Attribute name -> ``bentoml.api`` method, for every route of every served task."""
    apis: dict[str, Any] = {}
    for task, routes in ROUTES.items():
        for kind, paths in routes.items():
            for i, route in enumerate(paths):
                name = _api_name(task, kind, i)
                if kind == "predict":
                    apis[name] = _predict_api(task, TABULAR[task], name, route)
                elif kind == "batch":
                    apis[name] = _batch_api(task, TABULAR[task], name, route, settings)
                else:
                    apis[name] = _forecast_api(task, FORECASTS[task], name, route)
    for task, route in ACTUALS_ROUTES.items():
        apis[f"{task}_actuals"] = _actuals_api(task, f"{task}_actuals", route)
    for task, route in ALERT_ROUTES.items():
        apis[f"{task}_stock_alerts"] = _alerts_api(task, f"{task}_stock_alerts", route)
    return apis


for _name, _method in _task_apis(_BOOT).items():
    if hasattr(ShelfwiseService, _name):
        raise ValueError(f"task route name {_name!r} clashes with the service's own attribute")
    setattr(ShelfwiseService, _name, _method)

ShelfwiseService = bentoml.service(name="shelfwise", **service_options(_BOOT))(ShelfwiseService)  # type: ignore[misc]

ShelfwiseService.add_asgi_middleware(
    TenantAuthMiddleware,
    policies=route_policies(
        _ROUTE_TASKS,
        OWNERS,
        {FEEDBACK_ROUTE: "feedback", RELOAD_ROUTE: "admin"},
        [VERSIONS_ROUTE],
        task_routes={
            **{r: (t, "feedback") for t, r in ACTUALS_ROUTES.items()},
            **{r: (t, "feedback") for t, r in ALERT_ROUTES.items()},
        },
        protect_predictions=_BOOT.auth.protect_predictions,
    ),
    authenticator_factory=key_authenticator,
    limiter_factory=rate_limiter,
)
# MLflow's alias webhooks: verified by their HMAC signature, not by an API key (serving/push.py)
ShelfwiseService.add_asgi_middleware(
    RegistryEventReceiver,
    route=_BOOT.push.route,
    secret=lambda: _current().push_secret,
    max_age_s=_BOOT.push.max_age_s,
    on_event=lambda event: _current().registry_event(event),
)
# After the API-key check: Starlette runs the first registered middleware first.
ShelfwiseService.add_asgi_middleware(
    UnavailableGuard,
    routes=tuple(BATCH_ROUTES),
    reason=lambda route: _current().unavailable_reason(route),
    retry_after_s=lambda: _current().retry_after_s(),
)
