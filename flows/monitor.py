"""Prefect flows for tabular tasks (classification, regression): ``monitor-tabular`` (drift +
performance on feedback + KPIs -> decision -> event) and ``retrain-tabular`` (feedback-labelled
rows + original data -> train -> gate). Everything task-specific comes from the declaration."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE

from shelfwise.configs.datasets import TabularDatasetSpec
from shelfwise.configs.monitoring import MonitoringConfig
from shelfwise.configs.platform import load_platform_config
from shelfwise.configs.tasks import TaskKind, load_task, monitoring_config
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.flows.train import connect_tracking
from shelfwise.monitoring import records
from shelfwise.monitoring.drift import DriftSummary, drift_report
from shelfwise.monitoring.kpis import fulfilment_kpis
from shelfwise.monitoring.performance import labelled, task_performance
from shelfwise.monitoring.policy import Evidence, RetrainDecision, decide
from shelfwise.monitoring.store import PredictionStore
from shelfwise.monitoring.workspace import add_snapshots
from shelfwise.registry import log as rlog
from shelfwise.registry.reference import VersionReference, load_reference


@dataclass
class MonitorResult:
    model_name: str
    model_version: str
    window_rows: int
    labelled_rows: int
    drift_share: float | None
    drifted_columns: list[str]
    prediction_drift_score: float | None
    performance: dict[str, float] | None
    kpis: dict[str, Any]
    decision: dict[str, Any]
    event_id: str | None
    mlflow_run_id: str
    record_id: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@task(name="read-current-window", cache_policy=NO_CACHE)
def read_window(
    store: PredictionStore, cfg: MonitoringConfig, now: datetime, tenant: str | None = None
) -> pd.DataFrame:
    since = now - timedelta(days=cfg.window.days)
    return store.predictions_frame(
        cfg.model_name, since=since, limit=cfg.window.max_rows, tenant=tenant
    )


def task_tenant(task_name: str) -> str | None:
    """The tenant owning a task (configs/tenants.yaml): monitoring and retraining read only its
    rows. None (no owner): the rows of every tenant, as before tenants."""
    from shelfwise.configs.tenants import load_tenants

    return load_tenants().owner_of(task_name)


def _retry_unless_missing(task, task_run, state) -> bool:
    """Retry a registry hiccup, not a champion that does not exist."""
    from shelfwise.registry.aliases import RegistryError

    return not isinstance(state.result(raise_on_failure=False), RegistryError)


@task(
    name="load-champion-reference",
    retries=2,
    retry_delay_seconds=3,
    retry_condition_fn=_retry_unless_missing,
    cache_policy=NO_CACHE,
)
def champion_reference(tracking_uri: str, model_name: str) -> VersionReference:
    return load_reference(MlflowClient(tracking_uri=tracking_uri), model_name)


@task(name="drift-report", cache_policy=NO_CACHE)
def compute_drift(
    reference: pd.DataFrame, window: pd.DataFrame, spec: TabularDatasetSpec, cfg: MonitoringConfig
):
    if len(window) < cfg.window.min_rows:
        get_run_logger().info(
            "window has %s rows (< %s): no drift verdict", len(window), cfg.window.min_rows
        )
        return None, None
    missing = [c for c in spec.features if c not in window]
    if missing:
        raise ValueError(f"prediction log rows lack the model's input columns {missing}")
    return drift_report(
        reference, window, spec.numeric, spec.categorical, cfg.drift, cfg.prediction_column
    )


def _log_monitoring_run(
    task: str,
    experiment_id: str,
    ref: VersionReference,
    drift: DriftSummary | None,
    drift_snapshot,
    perf_snapshot,
    performance: dict[str, float] | None,
    kpis: dict[str, Any],
    decision: RetrainDecision,
    window_rows: int,
) -> str:
    with rlog.tracked_run(
        experiment_id=experiment_id, run_name=f"monitor-v{ref.version}-{time.strftime('%H%M%S')}"
    ) as run:
        mlflow.set_tags(
            {
                rlog.TAG_TASK: task,
                "shelfwise.monitored_version": ref.version,
                "shelfwise.monitored_run_id": ref.run_id,
                "shelfwise.retrain": str(decision.retrain).lower(),
                "shelfwise.trigger": decision.trigger or "none",
            }
        )
        metrics: dict[str, float] = {"window_rows": float(window_rows)}
        if drift is not None:
            metrics.update(drift.as_metrics())
        if performance:
            metrics.update({f"feedback_{k}": v for k, v in performance.items()})
        if kpis:
            metrics["high_risk_orders"] = float(kpis["high_risk_orders"])
        mlflow.log_metrics(metrics)
        mlflow.log_dict(kpis, "kpis/fulfilment_kpis.json")
        mlflow.log_dict(decision.as_dict(), "decision.json")
        with tempfile.TemporaryDirectory() as tmp:
            for name, snap in (
                ("drift_report.html", drift_snapshot),
                ("performance_report.html", perf_snapshot),
            ):
                if snap is not None:
                    path = Path(tmp) / name
                    snap.save_html(str(path))
                    mlflow.log_artifact(str(path), "reports")
    return run.info.run_id


def emit_retrain_event(
    cfg: MonitoringConfig, task: str, ref: VersionReference, decision: RetrainDecision
) -> str | None:
    from shelfwise.flows.events import emit_retrain_requested

    event = emit_retrain_requested(
        cfg.model_name,
        "; ".join(decision.reasons),
        decision.trigger or "drift",
        task=task,
        version=ref.version,
    )
    return str(event.id) if event is not None else None


@flow(name="monitor-tabular", flow_run_name="monitor-{task}")
def monitor_tabular(
    task: str,
    platform_config: str = "platform",
    emit: bool = True,
    now: datetime | None = None,
) -> dict:
    """Compare the served window with the champion's reference, score feedback with the task's
    own metrics, decide. ``task`` is a declared task's name or the path of its YAML."""
    capture_platform_logs()
    log = get_run_logger()
    declaration = load_task(task)
    cfg = monitoring_config(declaration)
    platform = load_platform_config(platform_config)
    spec = declaration.dataset_spec()
    now = now or datetime.now(UTC)
    tracking_uri, experiment_id = connect_tracking(platform, cfg.experiment)
    store = PredictionStore(platform.store_url)
    ref = champion_reference(tracking_uri, cfg.model_name)
    tenant = task_tenant(declaration.name)
    window = read_window(store, cfg, now, tenant)
    window = window[window["model_version"].astype(str) == ref.version] if len(window) else window
    drift_snapshot, drift = compute_drift(ref.reference, window, spec, cfg)
    rows = labelled(window)
    performance, perf_snapshot = task_performance(
        declaration.kind.value, rows, cfg.prediction_column
    )
    kpis: dict[str, Any] = {}
    if declaration.kind is TaskKind.classification:  # risk KPIs need a probability
        kpis = fulfilment_kpis(
            window,
            now,
            cfg.kpis.window_days,
            cfg.kpis.high_risk_threshold,
            cfg.kpis.segments,
            cfg.prediction_column,
        ).as_dict()
    evidence = Evidence(
        model_version=ref.version,
        window_rows=len(window),
        drift_share=drift.share if drift else None,
        prediction_drifted=bool(drift and drift.prediction_drifted),
        labelled_rows=len(rows),
        performance=performance,
        gate_metric=ref.gate_metrics.get(cfg.policy.performance.metric),
        new_feedback_rows=store.feedback_count_since(cfg.model_name, ref.created_at, tenant),
    )
    engine = records.ensure_tables(store.engine)
    last = records.last_retrain(engine, cfg.model_name)
    if last is not None:  # the labels that arrived since: a handled incident may be over
        since = store.feedback_count_since(cfg.model_name, last.at, tenant)
        last = dataclasses.replace(last, labelled_since=since)
    decision = decide(evidence, cfg.policy, cfg.window.min_rows, last, now)
    log.info(
        "v%s window %s rows, drift share %s, labelled %s, decision %s (%s)",
        ref.version,
        len(window),
        None if drift is None else f"{drift.share:.2f}",
        len(rows),
        "RETRAIN" if decision.retrain else "keep",
        "; ".join(decision.reasons),
    )
    run_id = _log_monitoring_run(
        declaration.name,
        experiment_id,
        ref,
        drift,
        drift_snapshot,
        perf_snapshot,
        performance,
        kpis,
        decision,
        len(window),
    )
    snaps = [s for s in (drift_snapshot, perf_snapshot) if s is not None]
    if snaps:
        add_snapshots(
            platform.state_path / "evidently",
            cfg.evidently_project,
            cfg.prediction_column,
            snaps,
            name=f"v{ref.version} {now:%Y-%m-%d %H:%M}",
        )
    fire = decision.retrain and emit
    event_id = emit_retrain_event(cfg, task, ref, decision) if fire else None
    record_id = records.record(
        engine,
        records.MonitoringRecord(
            created_at=now,
            model_name=cfg.model_name,
            model_version=ref.version,
            window_rows=len(window),
            labelled_rows=len(rows),
            drift_share=drift.share if drift else None,
            prediction_drift_score=drift.prediction_score if drift else None,
            metrics={**(drift.as_metrics() if drift else {}), **(performance or {})},
            **records.decision_columns(decision, emitted=emit),
            mlflow_run_id=run_id,
        ),
    )
    store.dispose()
    return MonitorResult(
        model_name=cfg.model_name,
        model_version=ref.version,
        window_rows=len(window),
        labelled_rows=len(rows),
        drift_share=drift.share if drift else None,
        drifted_columns=drift.drifted_columns if drift else [],
        prediction_drift_score=drift.prediction_score if drift else None,
        performance=performance,
        kpis=kpis,
        decision=decision.as_dict(),
        event_id=event_id,
        mlflow_run_id=run_id,
        record_id=record_id,
    ).as_dict()


def feedback_training_rows(window: pd.DataFrame, spec: TabularDatasetSpec) -> pd.DataFrame:
    """Labelled production rows in the dataset spec's shape (actual -> target)."""
    rows = labelled(window)
    out = rows[spec.features].copy()
    if spec.id_column:
        ids = rows["order_id"] if "order_id" in rows else rows["prediction_id"]
        out.insert(0, spec.id_column, ids.fillna(rows["prediction_id"]).astype(str).to_numpy())
    out[spec.target] = rows["actual"].to_numpy()
    return out.reset_index(drop=True)


@task(name="export-feedback-rows", cache_policy=NO_CACHE)
def export_feedback(
    store: PredictionStore,
    model_name: str,
    spec: TabularDatasetSpec,
    out_dir: Path,
    tenant: str | None = None,
) -> Path | None:
    frame = store.predictions_frame(model_name, tenant=tenant)
    if labelled(frame).empty:
        get_run_logger().info("no feedback-labelled production rows yet: original data only")
        return None
    rows = feedback_training_rows(frame, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"feedback-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    rows.to_csv(path, index=False)
    get_run_logger().info("exported %s feedback-labelled rows to %s", len(rows), path)
    return path


@flow(name="retrain-tabular", flow_run_name="retrain-{task}")
def retrain_tabular(
    task: str,
    model: str | None = None,
    trigger: str = "drift",
    reason: str = "",
    platform_config: str = "platform",
) -> dict:
    """Original training data plus the feedback-labelled production rows -> a challenger, which
    the train flow registers and sends through the task's gate. ``model``, when the triggering
    event names one, must be the task's registered model."""
    capture_platform_logs()
    from shelfwise.flows.train import train_tabular

    declaration = load_task(task)
    name = declaration.registered_model
    if model and model != name:
        raise ValueError(f"task {declaration.name} trains {name!r}, not {model!r}")
    platform = load_platform_config(platform_config)
    store = PredictionStore(platform.store_url)
    path = export_feedback(
        store,
        name,
        declaration.dataset_spec(),
        platform.state_path / "retrain",
        task_tenant(declaration.name),
    )
    get_run_logger().info("retraining %s (trigger %s): %s", name, trigger, reason or "-")
    result = train_tabular(
        task=task,
        platform_config=platform_config,
        trigger=trigger,
        extra_data=str(path) if path else None,
    )
    result["feedback_rows_file"] = str(path) if path else None
    return json.loads(json.dumps(result, default=str))
