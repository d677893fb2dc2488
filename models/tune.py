"""Optuna search over one candidate family of a tabular task: the objective, the sampler, the
pruner, the study.

The objective binds the data once (``make_objective``) and returns ``objective(trial) -> float``:
the mean k-fold score (the task's selection metric, on the folds every family shares) of one
sampled configuration. The study's direction follows the metric (models/metrics.py
``HIGHER_IS_BETTER``).

Pruning: after fold ``i`` the objective reports the *cumulative sum* of fold ROC-AUCs at step
``i``. The folds are the same for every trial, so at a given step the sum ranks trials exactly as
their running mean does; but Optuna's ``MedianPruner`` compares the *best* value a trial reported
over all its steps with the median at the current step, which suits rising learning curves. Fold
scores are not a learning curve (fold 0 scores higher than the others on this data for every
configuration), so a reported running mean never looks worse than the median and nothing would be
pruned (measured: 0 of 15 trials). A cumulative sum rises with every fold, so its best is its
latest value and the comparison is the intended one. For a metric where lower is better (RMSE)
the study minimises and the pruner takes the *smallest* value a trial reported, so the reported
value must fall with every fold: the cumulative sum of ``score - bound``, where ``bound`` is a
constant above any fold's score (ten times the spread of the target plus one). The offset is the
same for every trial at a given step, so the ranking is still that of the running mean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optuna
import pandas as pd

from shelfwise.configs.datasets import TabularDatasetSpec
from shelfwise.configs.tuning import ParamRange, PrunerConfig, SamplerConfig, TuningConfig
from shelfwise.models.metrics import HIGHER_IS_BETTER
from shelfwise.models.tabular import build_pipeline, cross_validate

logger = logging.getLogger(__name__)

FOLD_SCORES_ATTR = "fold_scores"
SECONDS_ATTR = "seconds"


def suggest_params(trial: optuna.Trial, space: Mapping[str, ParamRange]) -> dict[str, Any]:
    """Sample one value per searched hyper-parameter."""
    out: dict[str, Any] = {}
    for name, rng in space.items():
        if rng.type == "int":
            step = int(rng.step) if rng.step else 1
            out[name] = trial.suggest_int(name, int(rng.low), int(rng.high), step=step, log=rng.log)
        else:
            out[name] = trial.suggest_float(name, rng.low, rng.high, step=rng.step, log=rng.log)
    return out


def params_with(base: Any, values: Mapping[str, Any]) -> Any:
    """``base`` (a family's parameter model) with ``values`` substituted, validated (a bad
    value names the field)."""
    return type(base).model_validate({**base.model_dump(), **dict(values)})


def study_direction(metric: str) -> str:
    return "maximize" if metric in HIGHER_IS_BETTER else "minimize"


def make_objective(
    X: pd.DataFrame,
    y: np.ndarray,
    spec: TabularDatasetSpec,
    base_params: Any,
    space: Mapping[str, ParamRange],
    folds: int,
    seed: int,
    kind: str = "classification",
    family: str = "xgboost",
    metric: str = "roc_auc",
    missing: str = "keep",
) -> Callable[[optuna.Trial], float]:
    """Objective with the data bound once: the mean CV ``metric`` of the trial's configuration
    of ``family`` (a study of direction ``study_direction(metric)``)."""
    higher = metric in HIGHER_IS_BETTER
    yf = np.asarray(y, dtype=float)
    bound = 0.0 if higher else 10.0 * float(np.ptp(yf) + np.abs(yf).max()) + 1.0

    def objective(trial: optuna.Trial) -> float:
        params = params_with(base_params, suggest_params(trial, space))
        scores: list[float] = []
        started = time.perf_counter()

        def report(i: int, score: float) -> None:
            scores.append(score)
            trial.set_user_attr(FOLD_SCORES_ATTR, list(scores))
            trial.report(float(np.sum(scores) - bound * len(scores)), step=i)  # module docstring
            if trial.should_prune():
                trial.set_user_attr(SECONDS_ATTR, time.perf_counter() - started)
                raise optuna.TrialPruned(f"pruned after fold {i + 1}: mean {np.mean(scores):.4f}")

        result = cross_validate(
            lambda: build_pipeline(family, spec, params, seed, kind, missing),
            X,
            y,
            folds,
            seed,
            kind,
            metric,
            on_fold=report,
        )
        trial.set_user_attr(SECONDS_ATTR, time.perf_counter() - started)
        return result.mean

    return objective


def make_sampler(cfg: SamplerConfig, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """Seeded TPE. Workers sharing a study should use distinct ``seed_offset`` values, or their
    start-up trials repeat each other's parameters."""
    return optuna.samplers.TPESampler(
        seed=cfg.seed + seed_offset, n_startup_trials=cfg.n_startup_trials
    )


def make_pruner(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    if not cfg.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps
    )


def open_study(
    cfg: TuningConfig,
    storage_url: str,
    study_name: str | None = None,
    seed_offset: int = 0,
    attempts: int = 3,
    direction: str = "maximize",
) -> optuna.Study:
    """Create or resume (``load_if_exists``) the study in RDB storage.

    Several workers starting at once may race on creating the schema or the study; a failed
    attempt is retried, after which the study exists and is loaded.
    """
    name = study_name or cfg.study_name
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return optuna.create_study(
                study_name=name,
                storage=storage_url,
                direction=direction,
                sampler=make_sampler(cfg.sampler, seed_offset),
                pruner=make_pruner(cfg.pruner),
                load_if_exists=cfg.load_if_exists,
            )
        except optuna.exceptions.DuplicatedStudyError:
            raise
        except Exception as exc:  # schema/study creation race between workers
            last = exc
            logger.warning("opening study %s failed (attempt %s): %s", name, attempt + 1, exc)
            time.sleep(0.5 * (attempt + 1))
    raise RuntimeError(f"cannot open Optuna study {name!r} at {storage_url}: {last}") from last


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
