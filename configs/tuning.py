"""Hyper-parameter search settings (Optuna): search space, budget, sampler, pruner, storage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import ConfigError, load_config, resolve_config_path
from shelfwise.configs.tabular_training import FAMILY_PARAMS

ENV_OVERRIDES: dict[str, str] = {"storage": "SHELFWISE_OPTUNA_STORAGE"}


class ParamRange(StrictModel):
    """One searched hyper-parameter: an int or float range, optionally log-scaled or stepped."""

    type: Literal["int", "float"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _valid(self) -> ParamRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


class SamplerConfig(StrictModel):
    kind: Literal["tpe"] = "tpe"
    seed: int = 42
    n_startup_trials: int = Field(10, ge=0)


class PrunerConfig(StrictModel):
    enabled: bool = True
    kind: Literal["median"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="trials that are never pruned")
    n_warmup_steps: int = Field(1, ge=0, description="folds reported before pruning may start")


class TuningConfig(StrictModel):
    study_name: str = Field(min_length=1, description="default: <task>-<family>")
    family: str = Field(
        "xgboost", description="the candidate family searched (its parameters form the space)"
    )
    n_trials: int = Field(40, ge=0)
    timeout_s: float | None = Field(None, gt=0)
    cv_folds: int | None = Field(None, ge=2, le=20, description="None: the model config's folds")
    n_jobs: int = Field(
        1, ge=1, description="XGBoost threads per trial (scale out with workers, not threads)"
    )
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    storage: str | None = Field(
        None, description="Optuna RDB URL; None: sqlite:///<state_dir>/optuna.db"
    )
    load_if_exists: bool = True
    enqueue_base_params: bool = Field(
        False, description="evaluate the model config's parameters as the first trial"
    )
    space: dict[str, ParamRange]

    @model_validator(mode="after")
    def _known_params(self) -> TuningConfig:
        if self.family not in FAMILY_PARAMS:
            raise ValueError(
                f"family {self.family!r} cannot be tuned (known: {sorted(FAMILY_PARAMS)})"
            )
        fields = FAMILY_PARAMS[self.family].model_fields
        known = set(fields) - {"n_jobs"}
        unknown = sorted(set(self.space) - known)
        if unknown:
            raise ValueError(
                f"unknown {self.family} hyper-parameter(s) {unknown} in space; known: "
                f"{sorted(known)}"
            )
        for name, rng in self.space.items():
            annotation = fields[name].annotation
            integer = annotation is int or str(annotation).startswith("int |")
            if integer and rng.type != "int":
                raise ValueError(f"space.{name} must have type: int")
        return self

    def storage_url(self, state_dir: Path) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{state_dir.resolve() / 'optuna.db'}"


class TuningFile(StrictModel):
    tasks: dict[str, TuningConfig]

    def for_task(self, task: str) -> TuningConfig:
        if task not in self.tasks:
            raise ConfigError(
                f"no tuning settings for task {task!r}: key 'tasks.{task}' missing "
                f"(have {sorted(self.tasks)})"
            )
        return self.tasks[task]


def load_tuning_config(task: str, path: str | Path = "tuning") -> TuningConfig:
    """Settings of one task; ``SHELFWISE_OPTUNA_STORAGE`` overrides its storage URL."""
    p = resolve_config_path(path)
    overrides = {f"tasks.{task}.{k}": v for k, v in ENV_OVERRIDES.items()}
    return load_config(p, TuningFile, overrides).for_task(task)


def default_space() -> dict[str, dict[str, object]]:
    """The XGBoost search space a task gets when it declares none (as in configs/tuning.yaml)."""
    return {
        "max_depth": {"type": "int", "low": 1, "high": 8},
        "learning_rate": {"low": 0.005, "high": 0.3, "log": True},
        "n_estimators": {"type": "int", "low": 50, "high": 600, "step": 50},
        "subsample": {"low": 0.5, "high": 1.0},
        "colsample_bytree": {"low": 0.4, "high": 1.0},
        "min_child_weight": {"low": 1.0, "high": 100.0, "log": True},
        "reg_lambda": {"low": 0.001, "high": 20.0, "log": True},
        "reg_alpha": {"low": 0.001, "high": 20.0, "log": True},
        "gamma": {"low": 0.0, "high": 5.0},
    }
