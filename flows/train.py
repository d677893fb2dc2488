"""Prefect flow ``train-delay-risk``: wires the pure steps in models/ and registry/ together."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import mlflow
import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task

from shelfwise.configs.datasets import TabularDatasetSpec, load_tabular_spec
from shelfwise.configs.delay import DelayRiskConfig, XGBoostParams, load_delay_config
from shelfwise.configs.platform import PlatformConfig, load_platform_config
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.models import plots
from shelfwise.models.datasets import fingerprint, split_with_extra
from shelfwise.models.delay import (
    build_baseline_pipeline,
    build_xgb_pipeline,
    cross_validate_auc,
    feature_importance,
    features_and_target,
)
from shelfwise.models.metrics import classification_metrics, expected_calibration_error
from shelfwise.registry import log as rlog
from shelfwise.registry.tracking import ensure_tracking_uri

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_name: str
    version: str
    run_id: str
    baseline_run_id: str
    experiment_id: str
    tracking_uri: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    cv_roc_auc_mean: float
    data_fingerprint: str
    eval_fingerprint: str
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Prepared:
    train: pd.DataFrame
    test: pd.DataFrame
    source: str
    data_fingerprint: str
    eval_fingerprint: str


@task(name="load-and-split", retries=0)
def prepare_data(
    spec: TabularDatasetSpec,
    cfg: DelayRiskConfig,
    platform: PlatformConfig,
    extra_data: str | None = None,
) -> Prepared:
    # The evaluation set is a function of the data only (seeded split), so every challenger and
    # the champion are compared on the same rows; its fingerprint is tagged on each version.
    # Labelled production rows (extra_data) are split the same way: part trains the challenger,
    # part joins the evaluation set so the gate sees the new segment for both models.
    split = split_with_extra(
        spec, cfg.row_filter, cfg.split.test_size, cfg.split.seed, platform.data_dir, extra_data
    )
    if extra_data:
        get_run_logger().info("added feedback-labelled rows from %s", extra_data)
    return Prepared(
        split.train, split.test, split.source, fingerprint(split.train), fingerprint(split.test)
    )


@task(name="cross-validate")
def cross_validate(
    spec: TabularDatasetSpec, cfg: DelayRiskConfig, train: pd.DataFrame
) -> list[float]:
    log = get_run_logger()
    X, y = features_and_target(train, spec)

    def progress(i: int, auc: float) -> None:
        log.info("CV fold %s/%s: ROC-AUC %.4f", i + 1, cfg.split.cv_folds, auc)

    result = cross_validate_auc(
        lambda: build_xgb_pipeline(spec, cfg.xgboost, cfg.split.seed),
        X,
        y,
        cfg.split.cv_folds,
        cfg.split.seed,
        on_fold=progress,
    )
    log.info("CV ROC-AUC %.4f +/- %.4f", result.mean, result.std)
    return result.fold_scores


def _evaluation_figures(y: np.ndarray, proba: np.ndarray, label: str) -> dict:
    return {
        "roc.png": plots.roc_figure(y, proba, label),
        "precision_recall.png": plots.pr_figure(y, proba, label),
        "calibration.png": plots.calibration_figure(y, proba, label),
        "confusion_matrix.png": plots.confusion_figure(y, proba),
    }


def _common_tags(
    cfg: DelayRiskConfig,
    prepared: Prepared,
    family: str,
    trigger: str,
    spec: TabularDatasetSpec,
    platform: PlatformConfig,
) -> dict[str, str]:
    return {
        rlog.TAG_TASK: rlog.TASK_DELAY_RISK,
        rlog.TAG_FAMILY: family,
        rlog.TAG_DATA_FINGERPRINT: prepared.data_fingerprint,
        rlog.TAG_EVAL_FINGERPRINT: prepared.eval_fingerprint,
        rlog.TAG_CODE_VERSION: rlog.code_version(),
        rlog.TAG_CONFIG_HASH: rlog.config_hash(cfg, spec),
        rlog.TAG_TRIGGER: trigger,
    }


def _log_data(prepared: Prepared, spec: TabularDatasetSpec) -> None:
    rlog.log_dataset(
        prepared.train,
        f"{spec.name}-train",
        prepared.source,
        "training",
        spec.target,
        prepared.data_fingerprint,
    )
    rlog.log_dataset(
        prepared.test,
        f"{spec.name}-eval",
        prepared.source,
        "evaluation",
        spec.target,
        prepared.eval_fingerprint,
    )


@task(name="fit-baseline")
def fit_baseline(
    spec: TabularDatasetSpec,
    cfg: DelayRiskConfig,
    prepared: Prepared,
    experiment_id: str,
    trigger: str,
    platform: PlatformConfig,
) -> tuple[str, dict[str, float]]:
    X, y = features_and_target(prepared.train, spec)
    Xt, yt = features_and_target(prepared.test, spec)
    with rlog.tracked_run(
        experiment_id=experiment_id, run_name=f"logreg-baseline-{time.strftime('%Y%m%d-%H%M%S')}"
    ) as run:
        mlflow.set_tags(_common_tags(cfg, prepared, "logreg", trigger, spec, platform))
        mlflow.log_params({f"logreg.{k}": v for k, v in cfg.baseline.model_dump().items()})
        _log_data(prepared, spec)
        pipe = build_baseline_pipeline(spec, cfg.baseline, cfg.split.seed)
        pipe.fit(X, y)
        proba = pipe.predict_proba(Xt)[:, 1]
        metrics = classification_metrics(yt, proba)
        metrics["ece"] = expected_calibration_error(yt, proba)
        mlflow.log_metrics(metrics)
        rlog.log_figures(_evaluation_figures(yt, proba, "logistic regression"))
    get_run_logger().info("baseline holdout ROC-AUC %.4f", metrics["roc_auc"])
    return run.info.run_id, metrics


def fit_log_register(
    spec: TabularDatasetSpec,
    cfg: DelayRiskConfig,
    prepared: Prepared,
    params: XGBoostParams,
    cv_scores: list[float],
    experiment_id: str,
    trigger: str,
    platform: PlatformConfig,
    baseline_metrics: dict[str, float] | None = None,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
    nested: bool = False,
) -> tuple[str, str, dict[str, float]]:
    """Fit ``params`` on the training split, log everything, then register as the very last step.

    Plain function (no Prefect context needed) so the tuning flow and tests reuse it.
    Returns (run id, registered version, holdout metrics).
    """
    X, y = features_and_target(prepared.train, spec)
    Xt, yt = features_and_target(prepared.test, spec)
    tags = {**_common_tags(cfg, prepared, "xgboost", trigger, spec, platform), **(extra_tags or {})}
    with rlog.tracked_run(
        experiment_id=experiment_id,
        run_name=run_name or f"xgboost-{time.strftime('%Y%m%d-%H%M%S')}",
        nested=nested,
    ) as run:
        mlflow.set_tags(tags)
        mlflow.log_params({f"xgboost.{k}": v for k, v in params.model_dump().items()})
        mlflow.log_params(
            {
                "split.test_size": cfg.split.test_size,
                "split.seed": cfg.split.seed,
                "split.cv_folds": cfg.split.cv_folds,
                "dataset": spec.name,
            }
        )
        mlflow.log_dict(
            cfg.model_copy(update={"xgboost": params}).model_dump(mode="json"),
            "config/delay_risk.json",
        )
        _log_data(prepared, spec)
        for i, s in enumerate(cv_scores):
            mlflow.log_metric("cv_roc_auc", s, step=i)
        if cv_scores:
            mlflow.log_metrics(
                {
                    "cv_roc_auc_mean": float(np.mean(cv_scores)),
                    "cv_roc_auc_std": float(np.std(cv_scores)),
                }
            )
        logger.info("fitting XGBoost on %s rows", len(X))
        pipe = build_xgb_pipeline(spec, params, cfg.split.seed)
        pipe.fit(X, y)
        proba = pipe.predict_proba(Xt)[:, 1]
        metrics = classification_metrics(yt, proba)
        metrics["ece"] = expected_calibration_error(yt, proba)
        if baseline_metrics is not None:
            metrics["roc_auc_lift_over_baseline"] = metrics["roc_auc"] - baseline_metrics["roc_auc"]
        mlflow.log_metrics(metrics)
        figs = _evaluation_figures(yt, proba, "xgboost")
        figs["feature_importance.png"] = plots.importance_figure(feature_importance(pipe))
        rlog.log_figures(figs)
        reference = _reference_sample(pipe, prepared.train, spec, cfg)
        rlog.log_frame(reference, rlog.REFERENCE_ARTIFACT)
        info = rlog.log_classifier(pipe, X.head(50), pipe.predict_proba(X.head(50)))
        version = rlog.register_version(
            info.model_uri,
            cfg.registered_model_name,
            {
                **tags,
                "run_id": run.info.run_id,
                **{f"metric.{k}": f"{v:.6f}" for k, v in metrics.items()},
            },
            description=f"XGBoost delay-risk classifier; holdout ROC-AUC {metrics['roc_auc']:.4f}",
        )
        mlflow.set_tag("shelfwise.registered_version", version.version)
    logger.info(
        "registered %s v%s (holdout ROC-AUC %.4f)",
        cfg.registered_model_name,
        version.version,
        metrics["roc_auc"],
    )
    return run.info.run_id, version.version, metrics


@task(name="fit-log-register-xgboost")
def fit_xgboost(
    spec: TabularDatasetSpec,
    cfg: DelayRiskConfig,
    prepared: Prepared,
    cv_scores: list[float],
    experiment_id: str,
    trigger: str,
    platform: PlatformConfig,
    baseline_metrics: dict[str, float],
    params: XGBoostParams | None = None,
) -> tuple[str, str, dict[str, float]]:
    """Fit on the training split, log everything, then register as the very last step."""
    return fit_log_register(
        spec,
        cfg,
        prepared,
        params or cfg.xgboost,
        cv_scores,
        experiment_id,
        trigger,
        platform,
        baseline_metrics,
    )


def _reference_sample(
    pipe, train: pd.DataFrame, spec: TabularDatasetSpec, cfg: DelayRiskConfig
) -> pd.DataFrame:
    """Training inputs and predictions kept with the version as the drift reference."""
    n = min(cfg.reference_sample_size, len(train))
    sample = train.sample(n=n, random_state=cfg.split.seed) if n else train.head(0)
    out = sample[[*spec.features, spec.target]].copy()
    out["delay_probability"] = pipe.predict_proba(sample[spec.features])[:, 1] if n else []
    return out.reset_index(drop=True)


@task(name="connect-tracking", retries=3, retry_delay_seconds=[2, 5, 10])
def connect_tracking(platform: PlatformConfig, experiment: str) -> tuple[str, str]:
    """Reach the tracking server and the experiment; retried, since the server may be starting
    or restarting (a scheduled or event-triggered run must not fail on a blip)."""
    tracking_uri = ensure_tracking_uri(platform)
    mlflow.set_tracking_uri(tracking_uri)
    return tracking_uri, rlog.get_or_create_experiment(experiment)


@flow(name="train-delay-risk")
def train_delay_risk(
    config: str = "delay_risk",
    platform_config: str = "platform",
    trigger: str = "manual",
    extra_data: str | None = None,
    promote: bool = True,
    model_name: str | None = None,
    gate_config: str = "gate",
) -> dict:
    """Train the delay-risk classifier and its baseline, log both, register the XGBoost version,
    then (``promote``) mark it ``@challenger`` and run the gate against ``@champion``."""
    capture_platform_logs()
    if promote:
        from shelfwise.registry.promotion import check_trigger

        check_trigger(trigger)  # fail before training, not after registering
    cfg = load_delay_config(config)
    if model_name:
        cfg = cfg.model_copy(update={"registered_model_name": model_name})
    platform = load_platform_config(platform_config)
    spec = load_tabular_spec(cfg.dataset)
    prepared = prepare_data(spec, cfg, platform, extra_data)
    tracking_uri, experiment_id = connect_tracking(platform, cfg.experiment)
    mlflow.set_tracking_uri(tracking_uri)
    cv_scores = cross_validate(spec, cfg, prepared.train)
    baseline_run_id, baseline_metrics = fit_baseline(
        spec, cfg, prepared, experiment_id, trigger, platform
    )
    run_id, version, metrics = fit_xgboost(
        spec, cfg, prepared, cv_scores, experiment_id, trigger, platform, baseline_metrics
    )
    extra: dict = {}
    if promote:
        from shelfwise.flows.promote import gate_and_promote_flow
        from shelfwise.registry.aliases import set_challenger

        set_challenger(mlflow.MlflowClient(), cfg.registered_model_name, version)
        extra["gate"] = gate_and_promote_flow(
            model_name=cfg.registered_model_name,
            candidate=version,
            trigger=trigger,
            config=config,
            gate_config=gate_config,
            platform_config=platform_config,
            extra_data=extra_data,
        )
    return TrainResult(
        model_name=cfg.registered_model_name,
        version=version,
        run_id=run_id,
        baseline_run_id=baseline_run_id,
        experiment_id=experiment_id,
        tracking_uri=tracking_uri,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        cv_roc_auc_mean=float(np.mean(cv_scores)),
        data_fingerprint=prepared.data_fingerprint,
        eval_fingerprint=prepared.eval_fingerprint,
        extra=extra,
    ).as_dict()
