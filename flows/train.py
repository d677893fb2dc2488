"""Prefect flow ``train-tabular``: a classification or regression task's candidate families
compete on the same CV folds and the same held-out split; the winner on the task's selection
metric is registered, marked ``@challenger`` and gated. Only wiring: the steps live in
models/ and registry/, everything task-specific in the task's declaration."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sklearn.pipeline import Pipeline

from shelfwise.configs.datasets import TabularDatasetSpec
from shelfwise.configs.platform import PlatformConfig, load_platform_config
from shelfwise.configs.tabular_training import TabularTrainingConfig
from shelfwise.configs.tasks import TaskDeclaration, TaskKind, load_task, training_config
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.models import plots
from shelfwise.models.datasets import fingerprint, split_with_extra
from shelfwise.models.metrics import HIGHER_IS_BETTER, kind_metrics
from shelfwise.models.tabular import (
    CVResult,
    build_pipeline,
    cross_validate,
    feature_importance,
    features_and_target,
    predict,
)
from shelfwise.registry import log as rlog
from shelfwise.registry.tracking import ensure_tracking_uri

logger = logging.getLogger(__name__)

TAG_SELECTION_METRIC = "shelfwise.selection_metric"
TAG_WINNER = "shelfwise.winner_family"
TAG_PARENT = "shelfwise.candidates_run_id"
CANDIDATES_TABLE = "candidates.json"
CANDIDATES_MARKDOWN = "candidates.md"


@dataclass
class TrainResult:
    task: str
    model_name: str
    version: str
    family: str
    selection_metric: str
    run_id: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    metrics: dict[str, float]  # the winner's holdout metrics
    cv_mean: float  # the winner's CV mean of the selection metric
    candidates: dict[str, dict[str, Any]]  # family -> run id, CV summary, holdout metrics
    baseline_metrics: dict[str, dict[str, float]]  # every other family and the naive baseline
    naive_value: float
    data_fingerprint: str
    eval_fingerprint: str
    treatments: dict[str, int] = field(default_factory=dict)
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
    kind: str = "classification"
    # the training split's target mean: prevalence (classification) or mean (regression)
    naive_value: float = float("nan")
    treatments: dict[str, int] = field(default_factory=dict)


@task(name="load-and-split", retries=0)
def prepare_data(
    spec: TabularDatasetSpec,
    cfg: TabularTrainingConfig,
    platform: PlatformConfig,
    extra_data: str | None = None,
    kind: str = "classification",
    policy: Any = None,
) -> Prepared:
    # The evaluation set is a function of the data only (seeded split), so every challenger and
    # the champion are compared on the same rows; its fingerprint is tagged on each version.
    # Labelled production rows (extra_data) are split the same way: part trains the challenger,
    # part joins the evaluation set so the gate sees the new segment for both models.
    treatments: dict[str, int] = {}
    split = split_with_extra(
        spec,
        cfg.row_filter,
        cfg.split.test_size,
        cfg.split.seed,
        platform.data_dir,
        extra_data,
        kind,
        policy,
        treatments,
    )
    if extra_data:
        get_run_logger().info("added feedback-labelled rows from %s", extra_data)
    for what, count in treatments.items():
        get_run_logger().info("data treatment %s: %s value(s)", what, count)
    return Prepared(
        split.train,
        split.test,
        split.source,
        fingerprint(split.train),
        fingerprint(split.test),
        kind,
        float(features_and_target(split.train, spec, kind)[1].mean()),
        treatments,
    )


def _evaluation_figures(kind: str, y: np.ndarray, pred: np.ndarray, label: str) -> dict:
    if kind == TaskKind.regression:
        return {
            "predicted_vs_actual.png": plots.predicted_vs_actual_figure(y, pred, label),
            "residuals.png": plots.residual_figure(y, pred, label),
        }
    return {
        "roc.png": plots.roc_figure(y, pred, label),
        "precision_recall.png": plots.pr_figure(y, pred, label),
        "calibration.png": plots.calibration_figure(y, pred, label),
        "confusion_matrix.png": plots.confusion_figure(y, pred),
    }


def task_tags(task: TaskDeclaration) -> dict[str, str]:
    """The task a run or version belongs to: its name and the declaration file used."""
    tags = {rlog.TAG_TASK: task.name}
    if task.source is not None:
        tags[rlog.TAG_TASK_SOURCE] = str(Path(task.source).resolve())
    return tags


def _common_tags(
    task: TaskDeclaration,
    cfg: TabularTrainingConfig,
    prepared: Prepared,
    family: str,
    trigger: str,
    spec: TabularDatasetSpec,
) -> dict[str, str]:
    return {
        **task_tags(task),
        rlog.TAG_FAMILY: family,
        rlog.TAG_DATA_FINGERPRINT: prepared.data_fingerprint,
        rlog.TAG_EVAL_FINGERPRINT: prepared.eval_fingerprint,
        rlog.TAG_CODE_VERSION: rlog.code_version(),
        rlog.TAG_CONFIG_HASH: rlog.config_hash(cfg, spec),
        rlog.TAG_TRIGGER: trigger,
        rlog.TAG_NAIVE_VALUE: f"{prepared.naive_value:.10g}",
        TAG_SELECTION_METRIC: task.metric,
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


@dataclass
class Candidate:
    """One family's run: CV on the shared folds, refit on the training split, holdout scores."""

    family: str
    run_id: str
    params: Any
    cv: CVResult
    metrics: dict[str, float]
    pipe: Pipeline = field(repr=False)
    tags: dict[str, str] = field(default_factory=dict)

    def row(self, metric: str) -> dict[str, Any]:
        return {
            "family": self.family,
            f"cv_{metric}_mean": self.cv.mean if self.cv.fold_scores else None,
            f"cv_{metric}_std": self.cv.std if self.cv.fold_scores else None,
            **{f"test_{k}": v for k, v in self.metrics.items()},
            "run_id": self.run_id,
        }


def better(metric: str, a: float, b: float) -> bool:
    """Is ``a`` strictly better than ``b`` on ``metric`` (models/metrics.HIGHER_IS_BETTER)?"""
    return a > b if metric in HIGHER_IS_BETTER else a < b


def select_winner(candidates: list[Candidate], metric: str) -> Candidate:
    """The best CV mean of ``metric``; a tie goes to the family listed first."""
    best = candidates[0]
    for cand in candidates[1:]:
        if better(metric, cand.cv.mean, best.cv.mean):
            best = cand
    return best


def evaluate_candidate(
    task: TaskDeclaration,
    spec: TabularDatasetSpec,
    cfg: TabularTrainingConfig,
    prepared: Prepared,
    family: str,
    params: Any,
    experiment_id: str,
    trigger: str,
    cv: CVResult | None = None,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
    nested: bool = False,
) -> Candidate:
    """Cross-validate ``family`` on the task's folds (unless ``cv`` is given), refit it on the
    training split and score the holdout; everything logged to its own run, under the same
    metric names as every other family. Plain function: the tuning flow and tests reuse it."""
    kind = prepared.kind
    X, y = features_and_target(prepared.train, spec, kind)
    Xt, yt = features_and_target(prepared.test, spec, kind)
    tags = {**_common_tags(task, cfg, prepared, family, trigger, spec), **(extra_tags or {})}
    missing = task.data.missing

    def make() -> Pipeline:
        return build_pipeline(family, spec, params, cfg.split.seed, kind, missing)

    with rlog.tracked_run(
        experiment_id=experiment_id,
        run_name=run_name or f"{family}-{time.strftime('%Y%m%d-%H%M%S')}",
        nested=nested,
    ) as run:
        mlflow.set_tags(tags)
        mlflow.log_params({f"{family}.{k}": v for k, v in params.model_dump().items()})
        mlflow.log_params(
            {
                "split.test_size": cfg.split.test_size,
                "split.seed": cfg.split.seed,
                "split.cv_folds": cfg.split.cv_folds,
                "dataset": spec.name,
                "family": family,
                "data.missing": missing,
            }
        )
        mlflow.log_dict(
            cfg.model_copy(update={family: params}).model_dump(mode="json"),
            "config/training.json",
        )
        _log_data(prepared, spec)
        if cv is None:

            def progress(i: int, score: float) -> None:
                logger.info(
                    "%s CV fold %s/%s: %s %.4f",
                    family,
                    i + 1,
                    cfg.split.cv_folds,
                    task.metric,
                    score,
                )

            cv = cross_validate(
                make, X, y, cfg.split.cv_folds, cfg.split.seed, kind, task.metric, progress
            )
        for i, s in enumerate(cv.fold_scores):
            mlflow.log_metric(f"cv_{task.metric}", s, step=i)
        if cv.fold_metrics:
            mlflow.log_metrics(cv.summary())
        elif cv.fold_scores:
            mlflow.log_metrics({f"cv_{task.metric}_mean": cv.mean, f"cv_{task.metric}_std": cv.std})
        logger.info("fitting %s on %s rows", family, len(X))
        pipe = make()
        pipe.fit(X, y)
        pred = predict(pipe, Xt, kind)
        metrics = kind_metrics(kind, yt, pred)
        naive = kind_metrics(kind, yt, np.full(len(yt), prepared.naive_value))
        lift = metrics[task.metric] - naive[task.metric]
        metrics[f"{task.metric}_lift_over_{task.naive_baseline}"] = (
            lift if task.metric in HIGHER_IS_BETTER else -lift
        )
        mlflow.log_metrics(metrics)
        figs = _evaluation_figures(kind, yt, pred, family)
        figs["feature_importance.png"] = plots.importance_figure(feature_importance(pipe))
        rlog.log_figures(figs)
    if cv.fold_scores:
        logger.info(
            "%s: CV %s %.4f +/- %.4f, holdout %.4f",
            family,
            task.metric,
            cv.mean,
            cv.std,
            metrics[task.metric],
        )
    return Candidate(family, run.info.run_id, params, cv, metrics, pipe, tags)


def register_candidate(
    task: TaskDeclaration,
    spec: TabularDatasetSpec,
    cfg: TabularTrainingConfig,
    prepared: Prepared,
    cand: Candidate,
    nested: bool = False,
) -> str:
    """Log the candidate's model (self-contained) and drift reference into its own run, then
    register it as the very last step; returns the version."""
    kind = prepared.kind
    X, _ = features_and_target(prepared.train, spec, kind)
    with rlog.tracked_run(run_id=cand.run_id, nested=nested) as run:
        reference = _reference_sample(cand.pipe, prepared.train, spec, cfg, task, kind)
        rlog.log_frame(reference, rlog.REFERENCE_ARTIFACT)
        example = X.head(50)
        if kind == TaskKind.regression:
            info = rlog.log_regressor(cand.pipe, example, cand.pipe.predict(example))
        else:
            info = rlog.log_classifier(cand.pipe, example, cand.pipe.predict_proba(example))
        cv_tags = (
            {f"metric.cv_{task.metric}_mean": f"{cand.cv.mean:.6f}"} if cand.cv.fold_scores else {}
        )
        version = rlog.register_version(
            info.model_uri,
            cfg.registered_model_name,
            {
                **cand.tags,
                "run_id": run.info.run_id,
                **{f"metric.{k}": f"{v:.6f}" for k, v in cand.metrics.items()},
                **cv_tags,
            },
            description=(
                f"{cand.family} {kind} for task {task.name}; holdout {task.metric} "
                f"{cand.metrics[task.metric]:.4f}"
            ),
        )
        mlflow.set_tag("shelfwise.registered_version", version.version)
    logger.info(
        "registered %s v%s (%s, holdout %s %.4f)",
        cfg.registered_model_name,
        version.version,
        cand.family,
        task.metric,
        cand.metrics[task.metric],
    )
    return str(version.version)


def fit_log_register(
    task: TaskDeclaration,
    spec: TabularDatasetSpec,
    cfg: TabularTrainingConfig,
    prepared: Prepared,
    family: str,
    params: Any,
    experiment_id: str,
    trigger: str,
    cv: CVResult | None = None,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
    nested: bool = False,
) -> tuple[str, str, dict[str, float]]:
    """One family, evaluated and registered (the tuning flow's refit, tests). Returns (run id,
    registered version, holdout metrics)."""
    cand = evaluate_candidate(
        task,
        spec,
        cfg,
        prepared,
        family,
        params,
        experiment_id,
        trigger,
        cv,
        run_name,
        extra_tags,
        nested,
    )
    version = register_candidate(task, spec, cfg, prepared, cand, nested)
    return cand.run_id, version, cand.metrics


def _reference_sample(
    pipe: Pipeline,
    train: pd.DataFrame,
    spec: TabularDatasetSpec,
    cfg: TabularTrainingConfig,
    task: TaskDeclaration,
    kind: str,
) -> pd.DataFrame:
    """Training inputs and predictions kept with the version as the drift reference."""
    n = min(cfg.reference_sample_size, len(train))
    sample = train.sample(n=n, random_state=cfg.split.seed) if n else train.head(0)
    out = sample[[*spec.features, spec.target]].copy()
    out[task.prediction_field] = predict(pipe, sample[spec.features], kind) if n else []
    return out.reset_index(drop=True)


def candidates_frame(candidates: list[Candidate], metric: str, winner: str) -> pd.DataFrame:
    df = pd.DataFrame([c.row(metric) for c in candidates])
    df.insert(1, "selected", df["family"] == winner)
    return df


def _markdown(df: pd.DataFrame) -> str:
    cols = [c for c in df.columns if c != "run_id"] + ["run_id"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@task(name="families-compete", cache_policy=NO_CACHE)
def compete(
    task: TaskDeclaration,
    spec: TabularDatasetSpec,
    cfg: TabularTrainingConfig,
    prepared: Prepared,
    experiment_id: str,
    trigger: str,
) -> tuple[list[Candidate], Candidate, str, str]:
    """Every family of the task on the same folds and holdout, as nested runs of one parent run
    holding the candidates table; the winner's model is logged and registered."""
    log = get_run_logger()
    with rlog.tracked_run(
        experiment_id=experiment_id,
        run_name=f"{task.name}-candidates-{time.strftime('%Y%m%d-%H%M%S')}",
    ) as parent:
        mlflow.set_tags(
            {
                **task_tags(task),
                rlog.TAG_TRIGGER: trigger,
                TAG_SELECTION_METRIC: task.metric,
                rlog.TAG_DATA_FINGERPRINT: prepared.data_fingerprint,
                rlog.TAG_EVAL_FINGERPRINT: prepared.eval_fingerprint,
            }
        )
        if prepared.treatments:
            mlflow.log_dict(prepared.treatments, "data/treatments.json")
        candidates = []
        for family in task.families:
            cand = evaluate_candidate(
                task,
                spec,
                cfg,
                prepared,
                family,
                cfg.params(family),
                experiment_id,
                trigger,
                extra_tags={TAG_PARENT: parent.info.run_id},
                nested=True,
            )
            log.info(
                "%s: CV %s %.4f +/- %.4f, holdout %.4f",
                family,
                task.metric,
                cand.cv.mean,
                cand.cv.std,
                cand.metrics[task.metric],
            )
            candidates.append(cand)
        winner = select_winner(candidates, task.metric)
        table = candidates_frame(candidates, task.metric, winner.family)
        mlflow.log_table(table, CANDIDATES_TABLE)
        mlflow.log_text(_markdown(table), CANDIDATES_MARKDOWN)
        mlflow.log_metrics(
            {f"{c.family}.cv_{task.metric}_mean": c.cv.mean for c in candidates}
            | {f"{c.family}.test_{task.metric}": c.metrics[task.metric] for c in candidates}
        )
        mlflow.set_tag(TAG_WINNER, winner.family)
        log.info("selected %s on CV %s %.4f", winner.family, task.metric, winner.cv.mean)
        version = register_candidate(task, spec, cfg, prepared, winner, nested=True)
        mlflow.set_tag("shelfwise.registered_version", version)
    return candidates, winner, parent.info.run_id, version


@task(name="connect-tracking", retries=3, retry_delay_seconds=[2, 5, 10])
def connect_tracking(platform: PlatformConfig, experiment: str) -> tuple[str, str]:
    """Reach the tracking server and the experiment; retried, since the server may be starting
    or restarting (a scheduled or event-triggered run must not fail on a blip)."""
    tracking_uri = ensure_tracking_uri(platform)
    mlflow.set_tracking_uri(tracking_uri)
    return tracking_uri, rlog.get_or_create_experiment(experiment)


def tabular_task(task: str | TaskDeclaration) -> TaskDeclaration:
    """The declaration (by name or path) of a tabular task; a forecast task is refused."""
    declared = task if isinstance(task, TaskDeclaration) else load_task(task)
    if declared.kind is TaskKind.forecast:
        raise ValueError(
            f"task {declared.name!r} ({declared.source}) is a forecast task; the tabular flows "
            "train classification and regression tasks"
        )
    return declared


def _run_name() -> str:
    from prefect.runtime import flow_run

    ref = str(flow_run.parameters.get("task", "task"))
    return f"train-{Path(ref).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@flow(name="train-tabular", flow_run_name=_run_name)
def train_tabular(
    task: str,
    platform_config: str = "platform",
    trigger: str = "manual",
    extra_data: str | None = None,
    promote: bool = True,
    model_name: str | None = None,
) -> dict:
    """Train a classification or regression task (its name or the path of its YAML): every
    candidate family on the same folds and holdout, each its own MLflow run; register the
    winner on the task's selection metric, then (``promote``) mark it ``@challenger`` and run
    the gate against ``@champion``."""
    capture_platform_logs()
    if promote:
        from shelfwise.registry.promotion import check_trigger

        check_trigger(trigger)  # fail before training, not after registering
    declared = tabular_task(task)
    cfg = training_config(declared)
    if model_name:
        cfg = cfg.model_copy(update={"registered_model_name": model_name})
    platform = load_platform_config(platform_config)
    spec = declared.dataset_spec()
    kind = declared.kind.value
    prepared = prepare_data(spec, cfg, platform, extra_data, kind, declared.data)
    tracking_uri, experiment_id = connect_tracking(platform, cfg.experiment)
    mlflow.set_tracking_uri(tracking_uri)
    candidates, winner, parent_run_id, version = compete(
        declared, spec, cfg, prepared, experiment_id, trigger
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
            task=str(declared.source or declared.name),
            platform_config=platform_config,
            extra_data=extra_data,
        )
    _, yt = features_and_target(prepared.test, spec, kind)
    naive_metrics = kind_metrics(kind, yt, np.full(len(yt), prepared.naive_value))
    return TrainResult(
        task=declared.name,
        model_name=cfg.registered_model_name,
        version=version,
        family=winner.family,
        selection_metric=declared.metric,
        run_id=winner.run_id,
        parent_run_id=parent_run_id,
        experiment_id=experiment_id,
        tracking_uri=tracking_uri,
        metrics=winner.metrics,
        cv_mean=winner.cv.mean,
        candidates={c.family: c.row(declared.metric) for c in candidates},
        baseline_metrics={
            **{c.family: c.metrics for c in candidates if c is not winner},
            declared.naive_baseline: naive_metrics,
        },
        naive_value=prepared.naive_value,
        data_fingerprint=prepared.data_fingerprint,
        eval_fingerprint=prepared.eval_fingerprint,
        treatments=prepared.treatments,
        extra=extra,
    ).as_dict()
