"""Prefect flow ``tune-tabular``: Optuna search over one candidate family of a tabular task (the
task's ``tuning.family``, XGBoost by default), with one MLflow parent run per worker and one
nested run per trial; the best configuration is refit, registered and marked ``@challenger``,
then (``promote``) gated against ``@champion``.

Several workers (``shelfwise tune <task> --trials N --no-register`` in several processes) can
share one study through RDB storage (PostgreSQL for real parallelism); trials add up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import make_url

from shelfwise.configs.datasets import TabularDatasetSpec
from shelfwise.configs.platform import load_platform_config
from shelfwise.configs.tabular_training import TabularTrainingConfig
from shelfwise.configs.tasks import TaskDeclaration, training_config
from shelfwise.configs.tasks import tuning_config as task_tuning_config
from shelfwise.configs.tuning import ENV_OVERRIDES, TuningConfig
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.flows.train import (
    Prepared,
    connect_tracking,
    fit_log_register,
    prepare_data,
    tabular_task,
    task_tags,
)
from shelfwise.models.tabular import CVResult, features_and_target
from shelfwise.models.tune import (
    FOLD_SCORES_ATTR,
    SECONDS_ATTR,
    completed_trials,
    make_objective,
    open_study,
    params_with,
    study_direction,
)
from shelfwise.registry import log as rlog
from shelfwise.registry.aliases import set_challenger
from shelfwise.registry.promotion import check_trigger

logger = logging.getLogger(__name__)

TAG_STUDY = "shelfwise.tuning.study"
TAG_TRIAL = "shelfwise.tuning.trial"
TAG_STATE = "shelfwise.tuning.state"


@dataclass
class TuneResult:
    study_name: str
    storage: str
    worker_trials: int
    study_trials: int
    study_complete: int
    study_pruned: int
    best_value: float
    best_trial: int
    best_params: dict
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    seconds: float
    registered_version: str | None = None
    refit_metrics: dict = field(default_factory=dict)
    gate: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def redact(url: str) -> str:
    """Storage URL safe to log (password hidden)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def trial_logger(
    experiment_id: str, metric: str = "roc_auc", family: str = "xgboost"
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """Optuna callback: one nested MLflow run per finished trial (complete or pruned), with the
    metric names of the training runs (``cv_<metric>``, ``cv_<metric>_mean``)."""

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        folds = list(trial.user_attrs.get(FOLD_SCORES_ATTR, []))
        state = trial.state.name.lower()
        with rlog.tracked_run(
            experiment_id=experiment_id, run_name=f"trial-{trial.number}", nested=True
        ):
            mlflow.set_tags(
                {
                    TAG_STUDY: study.study_name,
                    TAG_TRIAL: str(trial.number),
                    TAG_STATE: state,
                    rlog.TAG_FAMILY: family,
                }
            )
            mlflow.log_params(trial.params)
            for i, s in enumerate(folds):
                mlflow.log_metric(f"cv_{metric}", s, step=i)
            if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None:
                mlflow.log_metric(f"cv_{metric}_mean", trial.value)
            elif folds:  # pruned: what it had reached, under another name
                mlflow.log_metric(f"cv_{metric}_partial_mean", float(np.mean(folds)))
            mlflow.log_metric("folds_evaluated", len(folds))
            if SECONDS_ATTR in trial.user_attrs:
                mlflow.log_metric("seconds", float(trial.user_attrs[SECONDS_ATTR]))
        logger.info(
            "trial %s %s: %s",
            trial.number,
            state,
            f"{trial.value:.4f}" if trial.value is not None else f"{len(folds)} folds",
        )

    return log_trial


def study_figures(study: optuna.Study) -> dict:
    """Optimisation history and parameter importances (matplotlib) when there is enough data."""
    from optuna.visualization import matplotlib as ovm

    figs = {}
    if completed_trials(study):
        figs["optimization_history.png"] = ovm.plot_optimization_history(study).figure
    if len(completed_trials(study)) >= 2:
        try:
            figs["param_importances.png"] = ovm.plot_param_importances(study).figure
        except (RuntimeError, ValueError) as exc:  # e.g. a parameter never varied
            logger.warning("parameter importances unavailable: %s", exc)
    for fig in figs.values():
        fig.set_size_inches(8, 5)
        fig.tight_layout()
    return figs


@task(name="optimize", cache_policy=NO_CACHE)
def optimize(
    study: optuna.Study,
    prepared: Prepared,
    spec: TabularDatasetSpec,
    cfg: TabularTrainingConfig,
    tcfg: TuningConfig,
    base: Any,
    n_trials: int,
    timeout_s: float | None,
    experiment_id: str,
    task: TaskDeclaration,
) -> int:
    """Run ``n_trials`` trials of this worker; returns how many it ran."""
    X, y = features_and_target(prepared.train, spec, prepared.kind)
    objective = make_objective(
        X,
        y,
        spec,
        base,
        tcfg.space,
        tcfg.cv_folds or cfg.split.cv_folds,
        cfg.split.seed,
        prepared.kind,
        tcfg.family,
        task.metric,
        task.data.missing,
    )
    before = len(study.trials)
    if tcfg.enqueue_base_params and before == 0:
        study.enqueue_trial({k: getattr(base, k) for k in tcfg.space}, skip_if_exists=True)
    mine: list[int] = []

    def count(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mine.append(trial.number)

    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=timeout_s,
        callbacks=[trial_logger(experiment_id, task.metric, tcfg.family), count],
        gc_after_trial=False,
    )
    return len(mine)


def _run_name() -> str:
    from prefect.runtime import flow_run

    ref = str(flow_run.parameters.get("task", "task"))
    return f"tune-{Path(ref).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _tuning(task: TaskDeclaration) -> TuningConfig:
    """The task's tuning section; ``SHELFWISE_OPTUNA_STORAGE`` overrides its storage URL."""
    tcfg = task_tuning_config(task)
    update = {k: os.environ[v] for k, v in ENV_OVERRIDES.items() if os.environ.get(v)}
    raw, _ = task.section("tuning")
    raw = dict(raw.get("tasks", {}).get(task.name) or {}) if "tasks" in raw else raw
    if "study_name" not in raw:  # one study per task and family
        update["study_name"] = f"{task.name}-{tcfg.family}"
    return tcfg.model_copy(update=update)


@flow(name="tune-tabular", flow_run_name=_run_name)
def tune_tabular(
    task: str,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    seed_offset: int = 0,
    pruning: bool | None = None,
    cv_folds: int | None = None,
    register_best: bool = True,
    promote: bool = True,
    model_name: str | None = None,
    trigger: str = "manual",
    platform_config: str = "platform",
) -> dict:
    """Tune one family of a tabular task (its name or the path of its YAML; the family is the
    task's ``tuning.family``), refit the best configuration, register it as ``@challenger`` and
    gate it."""
    capture_platform_logs()
    started = time.perf_counter()
    if register_best and promote:
        check_trigger(trigger)  # fail before the study, not after registering
    declared = tabular_task(task)
    cfg = training_config(declared)
    if model_name:
        cfg = cfg.model_copy(update={"registered_model_name": model_name})
    tcfg = _tuning(declared)
    updates: dict = {}
    if pruning is not None:
        updates["pruner"] = tcfg.pruner.model_copy(update={"enabled": pruning})
    if cv_folds is not None:
        updates["cv_folds"] = cv_folds
    if updates:
        tcfg = TuningConfig.model_validate({**tcfg.model_dump(), **updates})
    family = tcfg.family
    platform = load_platform_config(platform_config)
    spec = declared.dataset_spec()
    prepared = prepare_data(spec, cfg, platform, None, declared.kind.value, declared.data)
    tracking_uri, experiment_id = connect_tracking(platform, cfg.experiment)
    storage_url = storage or tcfg.storage_url(platform.state_path)
    if storage_url.startswith("sqlite:///"):
        platform.state_path.mkdir(parents=True, exist_ok=True)
    name = study_name or tcfg.study_name
    metric = declared.metric
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(tcfg, storage_url, name, seed_offset, direction=study_direction(metric))
    base = cfg.params(family)
    if "n_jobs" in type(base).model_fields:
        base = base.model_copy(update={"n_jobs": tcfg.n_jobs})
    budget = tcfg.n_trials if n_trials is None else n_trials
    with rlog.tracked_run(
        experiment_id=experiment_id, run_name=f"tune-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    ) as parent:
        mlflow.set_tags(
            {
                TAG_STUDY: name,
                "shelfwise.tuning.storage": redact(storage_url),
                "shelfwise.tuning.family": family,
                **task_tags(declared),
                rlog.TAG_TRIGGER: trigger,
                rlog.TAG_CODE_VERSION: rlog.code_version(),
            }
        )
        mlflow.log_params(
            {
                "tuning.n_trials": budget,
                "tuning.timeout_s": timeout_s or tcfg.timeout_s,
                "tuning.sampler_seed": tcfg.sampler.seed + seed_offset,
                "tuning.pruner": tcfg.pruner.kind if tcfg.pruner.enabled else "none",
                "tuning.cv_folds": tcfg.cv_folds or cfg.split.cv_folds,
                "tuning.family": family,
                "tuning.metric": metric,
            }
        )
        mlflow.log_dict(tcfg.model_dump(mode="json"), "config/tuning.json")
        ran = optimize(
            study,
            prepared,
            spec,
            cfg,
            tcfg,
            base,
            budget,
            timeout_s or tcfg.timeout_s,
            experiment_id,
            declared,
        )
        done = completed_trials(study)
        if not done:
            raise RuntimeError(f"study {name!r} has no completed trial; nothing to refit")
        best = study.best_trial  # over every worker's trials
        states = [t.state for t in study.get_trials(deepcopy=False)]
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_metrics(
            {
                f"best_cv_{metric}_mean": float(best.value),
                "best_trial": best.number,
                "study_trials": len(states),
                "study_pruned": states.count(optuna.trial.TrialState.PRUNED),
                "worker_trials": ran,
            }
        )
        rlog.log_figures(study_figures(study), "tuning")
        result = TuneResult(
            study_name=name,
            storage=redact(storage_url),
            worker_trials=ran,
            study_trials=len(states),
            study_complete=len(done),
            study_pruned=states.count(optuna.trial.TrialState.PRUNED),
            best_value=float(best.value),
            best_trial=best.number,
            best_params=dict(best.params),
            parent_run_id=parent.info.run_id,
            experiment_id=experiment_id,
            tracking_uri=tracking_uri,
            seconds=0.0,
        )
        if register_best:
            params = params_with(cfg.params(family), best.params)
            _, version, metrics = fit_log_register(
                declared,
                spec,
                cfg,
                prepared,
                family,
                params,
                experiment_id,
                trigger,
                cv=CVResult(list(best.user_attrs.get(FOLD_SCORES_ATTR, []))),
                run_name=f"refit-best-trial-{best.number}",
                extra_tags={
                    TAG_STUDY: name,
                    TAG_TRIAL: str(best.number),
                    "shelfwise.tuning.parent_run_id": parent.info.run_id,
                },
                nested=True,
            )
            set_challenger(mlflow.MlflowClient(), cfg.registered_model_name, version)
            mlflow.set_tag("shelfwise.registered_version", version)
            result.registered_version = version
            result.refit_metrics = metrics
    if register_best and promote:
        from shelfwise.flows.promote import gate_and_promote_flow

        result.gate = gate_and_promote_flow(
            model_name=cfg.registered_model_name,
            candidate=result.registered_version,
            trigger=trigger,
            task=str(declared.source or declared.name),
            platform_config=platform_config,
        )
    result.seconds = time.perf_counter() - started
    logger.info(
        "study %s: %s trials (%s here), best %.4f (trial %s)",
        name,
        result.study_trials,
        ran,
        result.best_value,
        result.best_trial,
    )
    return result.as_dict()
