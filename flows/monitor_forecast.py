"""Prefect flows ``monitor-forecast`` (the champion's forecasts vs realised actuals ->
decision -> event) and ``retrain-forecast`` (training data + actuals -> train -> gate).

How actuals arrive: as a file the user drops (CSV or Parquet in the data set's own columns:
time column, series keys, target), passed as ``actuals``. The forecaster is not served through
the prediction log (its forecasts are a deterministic function of the registered version, so
the monitor re-derives them from the champion's pyfunc for every actual's series and date
instead of joining logged requests), and actuals are the data set's future rows, which users
already hold as files. The retrain event carries the file's path, so the retraining trains on
exactly the actuals the decision was made on.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from evidently.core.report import Snapshot
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE

from shelfwise.configs.datasets import TimeSeriesDatasetSpec
from shelfwise.configs.monitoring_forecast import ForecastMonitoringConfig
from shelfwise.configs.platform import load_platform_config
from shelfwise.configs.tasks import TaskDeclaration, load_task, monitoring_config
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.flows.train import connect_tracking
from shelfwise.models.datasets import load_actuals
from shelfwise.monitoring import records
from shelfwise.monitoring.forecast_policy import (
    ForecastEvidence,
    decide_forecast_retrain,
    window_share,
)
from shelfwise.monitoring.performance import forecast_performance, forecast_report
from shelfwise.monitoring.policy import RetrainDecision
from shelfwise.monitoring.store import PredictionStore
from shelfwise.monitoring.workspace import add_snapshots, forecast_dashboard
from shelfwise.registry import forecast_gate as fgate
from shelfwise.registry import log as rlog
from shelfwise.registry.model_code import load_pyfunc


@dataclass
class ForecastMonitorResult:
    model_name: str
    model_version: str
    evidence: dict[str, Any]
    decision: dict[str, Any]
    event_id: str | None
    mlflow_run_id: str
    record_id: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Champion:
    version: str
    data_end: str
    window_end: str
    gate_smape: float | None


def read_champion(client: MlflowClient, model_name: str) -> Champion:
    from shelfwise.registry.aliases import resolve_version

    mv = resolve_version(client, model_name, "champion")  # RegistryError naming what is missing
    tags = mv.tags
    if fgate.TAG_DATA_END not in tags or fgate.TAG_WINDOW_END not in tags:
        raise ValueError(f"{model_name} v{mv.version} lacks its training-window tags")
    smape = tags.get("metric.smape")
    return Champion(
        str(mv.version),
        tags[fgate.TAG_DATA_END],
        tags[fgate.TAG_WINDOW_END],
        float(smape) if smape is not None else None,
    )


def actuals_after(
    actuals: pd.DataFrame, spec: TimeSeriesDatasetSpec, data_end: str
) -> pd.DataFrame:
    """Actuals in the panel's names (key columns, ds, y) for dates after the training end."""
    out = actuals[[*spec.series_keys, spec.time_column, spec.target]].rename(
        columns={spec.time_column: "ds", spec.target: "y"}
    )
    out = out[out["ds"] > pd.Timestamp(data_end)]
    return out.sort_values([*spec.series_keys, "ds"]).reset_index(drop=True)


@task(name="score-champion-on-actuals", cache_policy=NO_CACHE)
def score_actuals(
    model_uri: str, rows: pd.DataFrame, keys: list[str], window_end: str
) -> tuple[pd.DataFrame, int, int]:
    """(scored rows with yhat, rows of unknown series, rows beyond the forecast window)."""
    model = load_pyfunc(model_uri)
    hybrid = model.unwrap_python_model().model
    known = rows.merge(hybrid.keys[[*keys, "sid"]], on=keys, how="inner")
    unknown = len(rows) - len(known)
    inside = known[known["ds"] <= pd.Timestamp(window_end)]
    beyond = len(known) - len(inside)
    if inside.empty:
        return inside.assign(yhat=[]), unknown, beyond
    out = model.predict(inside[keys].assign(date=inside["ds"]))
    out = out.assign(date=pd.to_datetime(out["date"])).rename(columns={"date": "ds"})
    scored = inside.merge(out[[*keys, "ds", "yhat"]], on=[*keys, "ds"], how="left")
    return scored, unknown, beyond


def _log_run(
    task: str,
    experiment_id: str,
    model_name: str,
    champion: Champion,
    evidence: ForecastEvidence,
    decision: RetrainDecision,
    scored: pd.DataFrame,
    actuals: str,
    report: Snapshot | None,
) -> str:
    with rlog.tracked_run(
        experiment_id=experiment_id,
        run_name=f"monitor-v{champion.version}-{time.strftime('%H%M%S')}",
    ) as run:
        mlflow.set_tags(
            {
                rlog.TAG_TASK: task,
                "shelfwise.monitored_version": champion.version,
                "shelfwise.retrain": str(decision.retrain).lower(),
                "shelfwise.trigger": decision.trigger or "none",
                "shelfwise.actuals": actuals,
            }
        )
        metrics = {
            "actual_rows": float(evidence.actual_rows),
            "scored_rows": float(evidence.scored_rows),
            "beyond_window_rows": float(evidence.beyond_window_rows),
            "window_realised_share": evidence.window_realised_share,
        }
        if evidence.performance:
            metrics.update({f"feedback_{k}": v for k, v in evidence.performance.items()})
        if evidence.gate_smape is not None:
            metrics["gate_smape"] = evidence.gate_smape
        mlflow.log_metrics(metrics)
        mlflow.log_dict(evidence.as_dict(), "evidence.json")
        mlflow.log_dict(decision.as_dict(), "decision.json")
        if report is not None:
            rlog.log_frame(scored, "actuals/scored_forecasts.csv")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "forecast_performance_report.html"
                report.save_html(str(path))
                mlflow.log_artifact(str(path), "reports")
    return run.info.run_id


def store_snapshot(declaration: TaskDeclaration, spec, platform, now: datetime) -> Path:
    """The task's ingested actuals as a file (the retraining gets exactly what was scored)."""
    from shelfwise.models.datasets import DatasetError
    from shelfwise.monitoring.actuals import ActualsStore, snapshot

    store = ActualsStore(platform.store_url)
    try:
        return snapshot(
            store, declaration.name, spec, platform.state_path / "actuals", f"{now:%Y%m%dT%H%M%S}"
        )
    except LookupError as exc:
        raise DatasetError(str(exc)) from None
    finally:
        store.engine.dispose()


def _monitor(
    declaration: TaskDeclaration,
    task: str,
    actuals: str | None,
    platform_config: str,
    emit: bool,
    now: datetime,
) -> dict:
    log = get_run_logger()
    cfg: ForecastMonitoringConfig = monitoring_config(declaration)
    platform = load_platform_config(platform_config)
    spec = declaration.dataset_spec()
    if actuals is None:  # the ingested actuals (POST /v1/<task>/actuals, shelfwise actuals)
        actuals = str(store_snapshot(declaration, spec, platform, now))
        log.info("monitoring on the store's actuals: snapshot %s", actuals)
    tracking_uri, experiment_id = connect_tracking(platform, cfg.experiment)
    champion = read_champion(MlflowClient(tracking_uri), cfg.model_name)
    rows = actuals_after(load_actuals(spec, actuals), spec, champion.data_end)
    keys = list(spec.series_keys)
    scored, unknown, beyond = score_actuals(
        f"models:/{cfg.model_name}/{champion.version}", rows, keys, champion.window_end
    )
    realised_to = str(rows["ds"].max().date()) if len(rows) else None
    evidence = ForecastEvidence(
        model_version=champion.version,
        data_end=champion.data_end,
        window_end=champion.window_end,
        actual_rows=len(rows) - unknown,
        scored_rows=len(scored),
        beyond_window_rows=beyond,
        realised_to=realised_to,
        window_realised_share=window_share(champion.data_end, champion.window_end, realised_to),
        performance=forecast_performance(scored),
        gate_smape=champion.gate_smape,
    )
    store = PredictionStore(platform.store_url)
    engine = records.ensure_tables(store.engine)
    try:
        decision = decide_forecast_retrain(
            evidence, cfg.policy, records.last_retrain(engine, cfg.model_name), now
        )
        log.info(
            "v%s: %s actuals (%s scored, %s beyond the window, %s of unknown series), "
            "smape %s vs gate %s: %s (%s)",
            champion.version,
            evidence.actual_rows,
            evidence.scored_rows,
            beyond,
            unknown,
            None if not evidence.performance else f"{evidence.performance['smape']:.3f}",
            champion.gate_smape,
            "RETRAIN" if decision.retrain else "keep",
            "; ".join(decision.reasons + decision.suppressed),
        )
        report = forecast_report(scored) if len(scored) else None
        run_id = _log_run(
            declaration.name,
            experiment_id,
            cfg.model_name,
            champion,
            evidence,
            decision,
            scored,
            actuals,
            report,
        )
        if report is not None:  # the Evidently UI shows forecast error over time
            add_snapshots(
                platform.state_path / "evidently",
                cfg.evidently_project,
                "prediction",
                [report],
                name=f"v{champion.version} to {evidence.realised_to}",
                dashboard=forecast_dashboard,
            )
        event_id = None
        if decision.retrain and emit:
            from shelfwise.flows.events import emit_retrain_requested

            event = emit_retrain_requested(
                cfg.model_name,
                "; ".join(decision.reasons),
                decision.trigger or "feedback",
                task=task,
                version=champion.version,
                actuals=str(Path(actuals).resolve()),
            )
            event_id = str(event.id) if event is not None else None
        record_id = records.record(
            engine,
            records.MonitoringRecord(
                created_at=now,
                model_name=cfg.model_name,
                model_version=champion.version,
                window_rows=evidence.actual_rows,
                labelled_rows=evidence.scored_rows,
                drift_share=None,
                prediction_drift_score=None,
                metrics={
                    **(evidence.performance or {}),
                    "window_realised_share": evidence.window_realised_share,
                    "beyond_window_rows": float(beyond),
                    **({"gate_smape": champion.gate_smape} if champion.gate_smape else {}),
                },
                **records.decision_columns(decision, emitted=emit),
                mlflow_run_id=run_id,
            ),
        )
    finally:
        store.dispose()
    return ForecastMonitorResult(
        model_name=cfg.model_name,
        model_version=champion.version,
        evidence=evidence.as_dict(),
        decision=decision.as_dict(),
        event_id=event_id,
        mlflow_run_id=run_id,
        record_id=record_id,
    ).as_dict()


@flow(name="monitor-forecast", flow_run_name="monitor-{task}")
def monitor_forecast(
    task: str,
    actuals: str | None = None,
    platform_config: str = "platform",
    emit: bool = True,
    now: datetime | None = None,
) -> dict:
    """Score the champion's forecasts on the realised ``actuals`` (a file in the data set's
    columns; None: the actuals ingested into the store, snapshotted to a file), compare with
    its gate SMAPE, decide, record, and emit the retrain event. ``task`` is a declared forecast
    task's name or the path of its YAML."""
    capture_platform_logs()
    declaration = load_task(task)
    return _monitor(declaration, task, actuals, platform_config, emit, now or datetime.now(UTC))


@flow(name="retrain-forecast", flow_run_name="retrain-{task}")
def retrain_forecast(
    task: str,
    actuals: str,
    model: str | None = None,
    trigger: str = "feedback",
    reason: str = "",
    platform_config: str = "platform",
) -> dict:
    """The training data plus the realised ``actuals`` -> a challenger, registered and sent
    through the task's gate by the train flow."""
    capture_platform_logs()
    from shelfwise.flows.forecast import train_forecast

    declaration = load_task(task)
    name = declaration.registered_model
    if model and model != name:
        raise ValueError(f"task {declaration.name} trains {name!r}, not {model!r}")
    get_run_logger().info("retraining %s on %s (trigger %s): %s", name, actuals, trigger, reason)
    result = train_forecast(
        task=task, platform_config=platform_config, trigger=trigger, extra_data=actuals
    )
    result["actuals_file"] = actuals
    return json.loads(json.dumps(result, default=str))
