"""Task declarations: one YAML file per prediction task, ``configs/tasks/<name>.yaml``.

A task says *what* is predicted (``kind`` and ``dataset``); everything else has a default that
depends on the kind only, so the smallest declaration is three keys::

    name: purchase_intent
    kind: classification
    dataset: {kind: tabular, name: intent, path: intent.csv, target: bought, numeric: [visits]}

The platform's verbs (``shelfwise train|tune|gate|... <task>``), the service's routes, the
monitoring and the Prefect deployments are all derived from the declaration, so no code names a
task: the names in this module are *kinds* and *families*, never tasks.

Sections that have their own schema may be given inline (a mapping) or by reference (the name of
a file in ``configs/`` or a path): ``training`` (the kind's model config), ``gate`` (a gate rule),
``monitoring`` (the kind's monitoring config) and ``tuning`` (an Optuna search). Errors name the
file and the key, also for a referenced file.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shelfwise.configs.actuals import ActualsSettings, InventorySettings
from shelfwise.configs.base import StrictModel
from shelfwise.configs.datasets import TabularDatasetSpec, TimeSeriesDatasetSpec
from shelfwise.configs.loader import (
    ConfigError,
    configs_dir,
    parse_model,
    read_yaml,
    resolve_config_path,
)
from shelfwise.configs.online import AlarmSettings, ChallengerServing

TASKS_DIR_ENV = "SHELFWISE_TASKS_DIR"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class TaskKind(StrEnum):
    classification = "classification"
    regression = "regression"
    forecast = "forecast"


# The families that compete for a task's @champion when the task does not list its own, and the
# metric that picks the winner. The first family of each kind is its naive baseline (the gate's
# reference for a task's first version).
DEFAULT_CANDIDATES: dict[TaskKind, list[str]] = {
    TaskKind.classification: ["logistic", "random_forest", "xgboost"],
    TaskKind.regression: ["ridge", "xgboost"],
    TaskKind.forecast: ["seasonal_naive", "prophet", "xgboost", "hybrid"],
}
KNOWN_FAMILIES: dict[TaskKind, set[str]] = {
    TaskKind.classification: {"logistic", "random_forest", "xgboost", "lightgbm"},
    TaskKind.regression: {"ridge", "xgboost", "random_forest"},
    TaskKind.forecast: {"seasonal_naive", "prophet", "xgboost", "hybrid"},
}
DEFAULT_SELECTION_METRIC: dict[TaskKind, str] = {
    TaskKind.classification: "roc_auc",
    TaskKind.regression: "rmse",
    TaskKind.forecast: "smape",
}
NAIVE_BASELINE: dict[TaskKind, str] = {
    TaskKind.classification: "prevalence",
    TaskKind.regression: "mean",
    TaskKind.forecast: "seasonal_naive",
}
DATASET_KIND: dict[TaskKind, str] = {
    TaskKind.classification: "tabular",
    TaskKind.regression: "tabular",
    TaskKind.forecast: "timeseries",
}


# Which flow (a module path, as Prefect deployments take it) runs each lifecycle step of a kind.
_TABULAR = (TaskKind.classification, TaskKind.regression)
STEP_FLOWS: dict[str, dict[TaskKind, str]] = {
    "train": {
        **dict.fromkeys(_TABULAR, "shelfwise.flows.train.train_tabular"),
        TaskKind.forecast: "shelfwise.flows.forecast.train_forecast",
    },
    "tune": dict.fromkeys(_TABULAR, "shelfwise.flows.tune.tune_tabular"),
    "monitor": {
        **dict.fromkeys(_TABULAR, "shelfwise.flows.monitor.monitor_tabular"),
        TaskKind.forecast: "shelfwise.flows.monitor_forecast.monitor_forecast",
    },
    "retrain": {
        **dict.fromkeys(_TABULAR, "shelfwise.flows.monitor.retrain_tabular"),
        TaskKind.forecast: "shelfwise.flows.monitor_forecast.retrain_forecast",
    },
}


class DataPolicy(StrictModel):
    """How a real file's blemishes are treated (each is logged with a count)."""

    missing: Literal["keep", "impute", "error"] = Field(
        "keep",
        description="missing feature values: keep them for tree models (imputed for linear "
        "ones), impute for every family, or refuse the file naming the first row",
    )
    negative_target: Literal["error", "clip", "keep"] = Field(
        "keep", description="negative targets (returns): refuse, clip to 0, or keep"
    )


class TaskRoutes(StrictModel):
    """Extra HTTP routes that answer like the task's own (kept for existing clients)."""

    predict: str | None = None
    batch: str | None = None
    forecast: str | None = None

    @field_validator("predict", "batch", "forecast")
    @classmethod
    def _route(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"/[A-Za-z0-9_\-/]+", value):
            raise ValueError(f"route {value!r} must start with / and hold only [A-Za-z0-9_-/]")
        return value


class TaskServing(StrictModel):
    enabled: bool = True
    alias: str = "champion"
    path: str | None = Field(
        None, description="URL segment of /v1/<path>/...; default: the name with - for _"
    )
    output: str | None = Field(
        None,
        description="response field holding the prediction; default: probability "
        "(classification), prediction (regression)",
    )
    legacy_routes: TaskRoutes = TaskRoutes()
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="request field name of a dataset column (column -> field); default: the "
        "column name itself",
    )
    id_field: str = Field(
        "id", min_length=1, description="request field carrying the row's id (the id_column)"
    )
    batch_field: str = Field(
        "rows", min_length=1, description="key of the list in a batch request body"
    )
    challenger: ChallengerServing = Field(
        ChallengerServing(),
        description="online evaluation of a challenger alias: shadow and canary "
        "(configs/online.py)",
    )


class TaskSchedules(StrictModel):
    """Cron expressions (UTC) and intervals of the task's Prefect deployments; null = none."""

    train: str | None = None
    tune: str | None = None
    monitor_interval_s: int | None = Field(None, ge=10)
    monitor_cron: str | None = None
    online_compare_interval_s: int | None = Field(
        3600,
        ge=10,
        description="how often online-compare-<task> pairs the challenger with the champion "
        "(deployed when serving.challenger has shadow or a canary fraction); null: on demand",
    )
    alarm_check_interval_s: int | None = Field(
        60,
        ge=10,
        description="how often alarm-check-<task> judges the champion's live window (deployed "
        "when alarms.enabled); null: on demand",
    )


class TaskDeclaration(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    kind: TaskKind
    dataset: str | TabularDatasetSpec | TimeSeriesDatasetSpec = Field(
        description="a dataset spec inline, or the name (configs/datasets/<name>.yaml) or a path"
    )
    description: str = ""
    model_name: str | None = Field(None, description="registered model; default: the name")
    experiment: str | None = Field(None, description="MLflow experiment; default: the name")
    candidates: list[str] | None = Field(None, min_length=1)
    selection_metric: str | None = None
    training: str | dict[str, Any] | None = Field(
        None, description="the kind's model config: inline, or a config name or path"
    )
    gate: str | dict[str, Any] | None = Field(
        None, description="a gate rule: inline, or a config name or path (default: the kind's)"
    )
    monitoring: str | dict[str, Any] | None = None
    tuning: str | dict[str, Any] | None = None
    data: DataPolicy = DataPolicy()
    serving: TaskServing = TaskServing()
    schedules: TaskSchedules = TaskSchedules()
    actuals: ActualsSettings = Field(
        ActualsSettings(), description="forecast tasks: how ingested actuals move the forecast"
    )
    inventory: InventorySettings | None = Field(
        None, description="forecast tasks: lead time, service level and stock-alert level"
    )
    alarms: AlarmSettings = Field(
        AlarmSettings(), description="alarms on live traffic that roll the champion back"
    )
    source: Path | None = Field(None, exclude=True, description="the file it was read from")
    tenant: str = Field(
        "default", exclude=True, description="its owner, from configs/tenants.yaml (load_task)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TaskDeclaration:
        if not isinstance(self.dataset, str) and self.dataset.kind != DATASET_KIND[self.kind]:
            raise ValueError(
                f"dataset.kind {self.dataset.kind!r} does not fit kind {self.kind.value!r} "
                f"(needs {DATASET_KIND[self.kind]!r})"
            )
        unknown = sorted(set(self.candidates or []) - KNOWN_FAMILIES[self.kind])
        if unknown:
            raise ValueError(
                f"candidates {unknown} are not {self.kind.value} families "
                f"(known: {sorted(KNOWN_FAMILIES[self.kind])})"
            )
        return self

    @property
    def registered_model(self) -> str:
        """``model_name`` (default: the name); another tenant's than ``default``'s is
        ``<tenant>.<name>`` (configs/tenants.py), so each tenant has its own models."""
        from shelfwise.configs.tenants import tenant_model_name

        return tenant_model_name(self.tenant, self.model_name or self.name)

    @property
    def experiment_name(self) -> str:
        from shelfwise.configs.tenants import tenant_model_name

        return tenant_model_name(self.tenant, self.experiment or self.name)

    @property
    def families(self) -> list[str]:
        return list(self.candidates or DEFAULT_CANDIDATES[self.kind])

    @property
    def metric(self) -> str:
        return self.selection_metric or DEFAULT_SELECTION_METRIC[self.kind]

    @property
    def naive_baseline(self) -> str:
        return NAIVE_BASELINE[self.kind]

    @property
    def url_path(self) -> str:
        return self.serving.path or self.name.replace("_", "-")

    @property
    def prediction_field(self) -> str:
        if self.serving.output:
            return self.serving.output
        return "probability" if self.kind is TaskKind.classification else "prediction"

    def dataset_spec(self) -> TabularDatasetSpec | TimeSeriesDatasetSpec:
        """The dataset spec, read from configs/datasets when the declaration names one."""
        if not isinstance(self.dataset, str):
            return self.dataset
        spec_cls = (
            TimeSeriesDatasetSpec if DATASET_KIND[self.kind] == "timeseries" else TabularDatasetSpec
        )
        path = resolve_config_path(self.dataset, "datasets")
        spec = parse_model(spec_cls, read_yaml(path), path)
        return spec

    def section(self, key: str) -> tuple[dict[str, Any], Path | str]:
        """A referable section as ``(mapping, where it came from)``; {} when absent. A file
        shared by several tasks (``tasks: {<name>: ...}``, as configs/tuning.yaml) gives this
        task's entry."""
        value = getattr(self, key)
        where = f"{self.source or self.name} (key '{key}')"
        if value is None:
            return {}, where
        if isinstance(value, dict):
            return dict(value), where
        path = resolve_config_path(value)
        raw = read_yaml(path)
        if isinstance(raw.get("tasks"), dict):
            raw = dict(raw["tasks"].get(self.name) or {})
        return raw, path


def tasks_dir() -> Path:
    """Where declarations live: ``SHELFWISE_TASKS_DIR``, else ``configs/tasks``."""
    override = os.environ.get(TASKS_DIR_ENV)
    return Path(override) if override else configs_dir() / "tasks"


def task_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.is_file():
        return p
    return tasks_dir() / f"{str(name_or_path).replace('-', '_')}.yaml"


def load_task(name_or_path: str | Path) -> TaskDeclaration:
    """A declared task by name (``delay_risk`` or ``delay-risk``) or by the path of its YAML."""
    path = task_path(name_or_path)
    if not path.is_file():
        have = ", ".join(task_names()) or "none"
        raise ConfigError(f"no task {str(name_or_path)!r}: {path} not found (declared: {have})")
    raw = read_yaml(path)
    if "tenant" in raw:
        raise ConfigError(
            f"invalid configuration in {path}:\n  key 'tenant': a task's owner is set in "
            "configs/tenants.yaml (the tenant's tasks), not in the task"
        )
    task = parse_model(TaskDeclaration, raw, path)
    if path.parent.resolve() == tasks_dir().resolve() and path.stem != task.name:
        raise ConfigError(f"invalid configuration in {path}:\n  key 'name': must be {path.stem!r}")
    task = task.model_copy(update={"source": path, "tenant": _owner(task.name)})
    validate_sections(task)
    return task


def _owner(task: str) -> str:
    """The tenant owning ``task`` (configs/tenants.yaml); nobody's: the default tenant's names."""
    from shelfwise.configs.tenants import DEFAULT_TENANT, load_tenants

    return load_tenants().owner_of(task) or DEFAULT_TENANT


def validate_sections(task: TaskDeclaration) -> None:
    """Every section parses for the task's kind, so a broken declaration is refused by every
    verb at once, naming its file and key (not only by the step that reads that section)."""
    training_config(task)
    gate_rule(task)
    monitoring_config(task)
    if task.kind is not TaskKind.forecast:
        tuning_config(task)


def task_names() -> list[str]:
    folder = tasks_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_tasks() -> list[TaskDeclaration]:
    """Every declared task, sorted by name; a broken file raises (naming it)."""
    return [load_task(tasks_dir() / f"{name}.yaml") for name in task_names()]


# -- the sections, resolved into the kinds' own config models ---------------------------------


def _parse(model_cls: Any, task: TaskDeclaration, key: str, defaults: dict[str, Any]) -> Any:
    raw, where = task.section(key)
    return parse_model(model_cls, {**defaults, **raw}, where)


def training_config(task: TaskDeclaration) -> Any:
    """The kind's model config (``TabularTrainingConfig`` for tabular kinds, ``ForecastConfig`` for
    forecasts) with the task's registered model, experiment and dataset filled in."""
    from shelfwise.configs.forecast import ForecastConfig
    from shelfwise.configs.tabular_training import TabularTrainingConfig

    model_cls = ForecastConfig if task.kind is TaskKind.forecast else TabularTrainingConfig
    dataset = task.dataset if isinstance(task.dataset, str) else task.dataset.name
    defaults = {
        "registered_model_name": task.registered_model,
        "experiment": task.experiment_name,
        "dataset": dataset,
    }
    cfg = _parse(model_cls, task, "training", defaults)
    update: dict[str, Any] = {
        "registered_model_name": task.registered_model,
        "experiment": task.experiment_name,
    }
    if isinstance(task.dataset, str):
        update["dataset"] = task.dataset
    return cfg.model_copy(update=update)


def default_gate_rule(task: TaskDeclaration) -> dict[str, Any]:
    """The kind's gate: significantly better than the champion on the selection metric, and
    better than the naive baseline (also for the first version); no absolute floors."""
    rule: dict[str, Any] = {
        "primary": {"metric": task.metric, "min_improvement": 0.0, "require_significant": True},
        "baseline": {"metric": task.metric},
    }
    if task.kind is TaskKind.classification:
        rule["guardrails"] = [
            {"metric": "brier", "tolerance": 0.005},
            {"metric": "ece", "tolerance": 0.02},
        ]
    if task.kind is TaskKind.forecast:
        rule["primary"]["non_inferiority_margin"] = 0.5
    return rule


def gate_rule(task: TaskDeclaration) -> Any:
    from shelfwise.configs.gate import GateRule

    raw, where = task.section("gate")
    return parse_model(GateRule, raw or default_gate_rule(task), where)


def monitoring_config(task: TaskDeclaration) -> Any:
    """The kind's monitoring config, pointed at the task's model and experiment."""
    if task.kind is TaskKind.forecast:
        from shelfwise.configs.monitoring_forecast import ForecastMonitoringConfig

        defaults = {
            "model_name": task.registered_model,
            "experiment": f"monitoring-{task.name}",
            "evidently_project": f"Shelfwise {task.name}",
        }
        return _parse(ForecastMonitoringConfig, task, "monitoring", defaults).model_copy(
            update={"model_name": task.registered_model}
        )
    from shelfwise.configs.monitoring import MonitoringConfig

    defaults = {
        "model_name": task.registered_model,
        "experiment": f"monitoring-{task.name}",
        "prediction_column": task.prediction_field,
        "evidently_project": f"Shelfwise {task.name}",
    }
    if task.kind is TaskKind.regression:  # no absolute bound in unknown units: relative only
        defaults["policy"] = {
            "performance": {
                "metric": task.metric,
                "floor": None,
                "max_drop": None,
                "max_relative_drop": 0.2,
            }
        }
    elif task.metric != "roc_auc":
        defaults["policy"] = {"performance": {"metric": task.metric}}
    return _parse(MonitoringConfig, task, "monitoring", defaults).model_copy(
        update={"model_name": task.registered_model}
    )


def tuning_config(task: TaskDeclaration) -> Any:
    from shelfwise.configs.tuning import TuningConfig

    defaults = {"study_name": f"{task.name}-xgboost"}
    raw, _ = task.section("tuning")
    if not raw:
        from shelfwise.configs.tuning import default_space

        defaults["space"] = default_space()
    return _parse(TuningConfig, task, "tuning", defaults)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = deep_merge(out[k], v) if both else v
    return out


REFERABLE = ("training", "gate", "monitoring", "tuning")


def materialise(task: TaskDeclaration, *layers: dict[str, Any]) -> dict[str, Any]:
    """The declaration as one self-contained mapping: every referenced section read in (a
    shared file's entry for this task only) and ``layers`` merged over it, validated. What a
    scenario writes when it runs a shipped task with a few keys changed."""
    raw = task.model_dump(mode="json", exclude_none=True, exclude={"source"})
    for key in REFERABLE:
        section, _ = task.section(key)
        if section:
            raw[key] = section
    for layer in layers:
        raw = deep_merge(raw, layer)
    where = f"{task.source or task.name} with overrides"
    checked = parse_model(TaskDeclaration, raw, where)
    training_config(checked)
    gate_rule(checked)
    monitoring_config(checked)
    return raw
