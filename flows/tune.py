"""Prefect flow ``tune-delay-risk``: Optuna search with one MLflow parent run per worker and one
nested run per trial; the best configuration is refit, registered and marked ``@challenger``,
then (``promote``) gated against ``@champion``.

Several workers (``shelfwise tune delay-risk --trials N --no-register`` in several processes)
can share one study through RDB storage (PostgreSQL for real parallelism); trials add up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import mlflow
import numpy as np
import optuna
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import make_url

from shelfwise.configs.datasets import TabularDatasetSpec, load_tabular_spec
from shelfwise.configs.delay import DelayRiskConfig, XGBoostParams, load_delay_config
from shelfwise.configs.platform import load_platform_config
from shelfwise.configs.tuning import TuningConfig, load_tuning_config
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.flows.train import Prepared, connect_tracking, fit_log_register, prepare_data
from shelfwise.models.delay import features_and_target
from shelfwise.models.tune import (
    FOLD_SCORES_ATTR,
    SECONDS_ATTR,
    completed_trials,
    make_objective,
    open_study,
    params_with,
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
    experiment_id: str,
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """Optuna callback: one nested MLflow run per finished trial (complete or pruned)."""

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        folds = list(trial.user_attrs.get(FOLD_SCORES_ATTR, []))
        state = trial.state.name.lower()
        with rlog.tracked_run(
            experiment_id=experiment_id, run_name=f"trial-{trial.number}", nested=True
        ):
            mlflow.set_tags(
                {TAG_STUDY: study.study_name, TAG_TRIAL: str(trial.number), TAG_STATE: state}
            )
            mlflow.log_params(trial.params)
            for i, s in enumerate(folds):
                mlflow.log_metric("cv_roc_auc", s, step=i)
            if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None:
                mlflow.log_metric("cv_roc_auc_mean", trial.value)
            elif folds:  # pruned: what it had reached, under another name
                mlflow.log_metric("cv_roc_auc_partial_mean", float(np.mean(folds)))
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
    cfg: DelayRiskConfig,
    tcfg: TuningConfig,
    base: XGBoostParams,
    n_trials: int,
    timeout_s: float | None,
    experiment_id: str,
) -> int:
    """Run ``n_trials`` trials of this worker; returns how many it ran."""
    X, y = features_and_target(prepared.train, spec)
    objective = make_objective(
        X, y, spec, base, tcfg.space, tcfg.cv_folds or cfg.split.cv_folds, cfg.split.seed
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
        callbacks=[trial_logger(experiment_id), count],
        gc_after_trial=False,
    )
    return len(mine)


@flow(name="tune-delay-risk")
def tune_delay_risk(
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
    config: str = "delay_risk",
    tuning_config: str = "tuning",
    gate_config: str = "gate",
    platform_config: str = "platform",
) -> dict:
    """Tune, refit the best configuration, register it as ``@challenger`` and gate it."""
    capture_platform_logs()
    started = time.perf_counter()
    if register_best and promote:
        check_trigger(trigger)  # fail before the study, not after registering
    cfg = load_delay_config(config)
    if model_name:
        cfg = cfg.model_copy(update={"registered_model_name": model_name})
    tcfg = load_tuning_config(tuning_config)
    updates: dict = {}
    if pruning is not None:
        updates["pruner"] = tcfg.pruner.model_copy(update={"enabled": pruning})
    if cv_folds is not None:
        updates["cv_folds"] = cv_folds
    if updates:
        tcfg = TuningConfig.model_validate({**tcfg.model_dump(), **updates})
    platform = load_platform_config(platform_config)
    spec = load_tabular_spec(cfg.dataset)
    prepared = prepare_data(spec, cfg, platform)
    tracking_uri, experiment_id = connect_tracking(platform, cfg.experiment)
    storage_url = storage or tcfg.storage_url(platform.state_path)
    if storage_url.startswith("sqlite:///"):
        platform.state_path.mkdir(parents=True, exist_ok=True)
    name = study_name or tcfg.study_name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(tcfg, storage_url, name, seed_offset)
    base = cfg.xgboost.model_copy(update={"n_jobs": tcfg.n_jobs})
    budget = tcfg.n_trials if n_trials is None else n_trials
    with rlog.tracked_run(
        experiment_id=experiment_id, run_name=f"tune-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    ) as parent:
        mlflow.set_tags(
            {
                TAG_STUDY: name,
                "shelfwise.tuning.storage": redact(storage_url),
                rlog.TAG_TASK: rlog.TASK_DELAY_RISK,
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
        )
        done = completed_trials(study)
        if not done:
            raise RuntimeError(f"study {name!r} has no completed trial; nothing to refit")
        best = study.best_trial  # over every worker's trials
        states = [t.state for t in study.get_trials(deepcopy=False)]
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_metrics(
            {
                "best_cv_roc_auc_mean": float(best.value),
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
            params = params_with(cfg.xgboost, best.params)
            _, version, metrics = fit_log_register(
                spec,
                cfg,
                prepared,
                params,
                list(best.user_attrs.get(FOLD_SCORES_ATTR, [])),
                experiment_id,
                trigger,
                platform,
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
            config=config,
            gate_config=gate_config,
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
