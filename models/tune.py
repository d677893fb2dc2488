"""Optuna search over the delay-risk XGBoost: the objective, the sampler, the pruner, the study.

The objective binds the data once (``make_objective``) and returns ``objective(trial) -> float``:
the mean stratified k-fold ROC-AUC of one sampled configuration.

Pruning: after fold ``i`` the objective reports the *cumulative sum* of fold ROC-AUCs at step
``i``. The folds are the same for every trial, so at a given step the sum ranks trials exactly as
their running mean does; but Optuna's ``MedianPruner`` compares the *best* value a trial reported
over all its steps with the median at the current step, which suits rising learning curves. Fold
scores are not a learning curve (fold 0 scores higher than the others on this data for every
configuration), so a reported running mean never looks worse than the median and nothing would be
pruned (measured: 0 of 15 trials). A cumulative sum rises with every fold, so its best is its
latest value and the comparison is the intended one.
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
from shelfwise.configs.delay import XGBoostParams
from shelfwise.configs.tuning import ParamRange, PrunerConfig, SamplerConfig, TuningConfig
from shelfwise.models.delay import build_xgb_pipeline, cross_validate_auc

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


def params_with(base: XGBoostParams, values: Mapping[str, Any]) -> XGBoostParams:
    """``base`` with ``values`` substituted, validated (a bad value names the field)."""
    return XGBoostParams.model_validate({**base.model_dump(), **dict(values)})


def make_objective(
    X: pd.DataFrame,
    y: np.ndarray,
    spec: TabularDatasetSpec,
    base_params: XGBoostParams,
    space: Mapping[str, ParamRange],
    folds: int,
    seed: int,
) -> Callable[[optuna.Trial], float]:
    """Objective with the data bound once: mean CV ROC-AUC of the trial's configuration."""

    def objective(trial: optuna.Trial) -> float:
        params = params_with(base_params, suggest_params(trial, space))
        scores: list[float] = []
        started = time.perf_counter()

        def report(i: int, auc: float) -> None:
            scores.append(auc)
            trial.set_user_attr(FOLD_SCORES_ATTR, list(scores))
            trial.report(float(np.sum(scores)), step=i)  # see module docstring
            if trial.should_prune():
                trial.set_user_attr(SECONDS_ATTR, time.perf_counter() - started)
                raise optuna.TrialPruned(f"pruned after fold {i + 1}: mean {np.mean(scores):.4f}")

        result = cross_validate_auc(
            lambda: build_xgb_pipeline(spec, params, seed), X, y, folds, seed, on_fold=report
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
                direction="maximize",
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
