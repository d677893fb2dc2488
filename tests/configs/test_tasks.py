"""Task declarations: the shipped ones load, the smallest one gets the kind's defaults, and a bad
declaration is refused naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shelfwise.configs.loader import ConfigError
from shelfwise.configs.tasks import (
    DEFAULT_CANDIDATES,
    TaskKind,
    gate_rule,
    load_task,
    load_tasks,
    monitoring_config,
    task_names,
    training_config,
)

MINIMAL_DATASET = {
    "kind": "tabular",
    "name": "intent",
    "path": "intent.csv",
    "target": "bought",
    "numeric": ["visits"],
    "categorical": ["channel"],
}


def _write(folder: Path, name: str, body: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def test_shipped_tasks_load_with_their_own_models() -> None:
    tasks = {t.name: t for t in load_tasks()}
    assert set(task_names()) == set(tasks) >= {"delay_risk", "demand_forecast", "walmart_weekly"}
    models = [training_config(t).registered_model_name for t in tasks.values()]
    assert len(models) == len(set(models)), "two tasks would share one registered model"
    assert tasks["delay_risk"].kind is TaskKind.classification
    assert tasks["walmart_weekly"].dataset_spec().frequency == "W"
    assert load_task("delay-risk").name == "delay_risk"  # the CLI spelling resolves too


def test_minimal_declaration_gets_the_kinds_defaults(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "intent", {"name": "intent", "kind": "classification", "dataset": MINIMAL_DATASET}
    )
    task = load_task(path)
    assert task.families == DEFAULT_CANDIDATES[TaskKind.classification]
    assert task.metric == "roc_auc" and task.url_path == "intent"
    rule = gate_rule(task)
    assert rule.floors == {} and rule.baseline is not None and rule.baseline.metric == "roc_auc"
    cfg = training_config(task)
    assert cfg.registered_model_name == "intent" and cfg.experiment == "intent"
    mon = monitoring_config(task)
    assert mon.model_name == "intent" and mon.prediction_column == "probability"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"kind": "clustering"}, "kind"),
        ({"kind": "forecast"}, "<root>"),  # a tabular dataset cannot feed a forecast
        ({"candidates": ["prophet"]}, "<root>"),  # not a classification family
        ({"name": "Bad Name"}, "name"),
        ({"schedules": {"monitor_interval_s": 1}}, "schedules.monitor_interval_s"),
        ({"serving": {"legacy_routes": {"predict": "no-slash"}}}, "serving.legacy_routes.predict"),
    ],
)
def test_bad_declaration_names_file_and_key(tmp_path: Path, change: dict, key: str) -> None:
    body = {"name": "intent", "kind": "classification", "dataset": MINIMAL_DATASET, **change}
    path = _write(tmp_path, "intent", body)
    with pytest.raises(ConfigError) as err:
        load_task(path)
    assert str(path) in str(err.value) and f"key '{key}'" in str(err.value)


def test_missing_required_key_and_unknown_task(tmp_path: Path) -> None:
    path = _write(tmp_path, "intent", {"name": "intent", "kind": "classification"})
    with pytest.raises(ConfigError, match="key 'dataset'"):
        load_task(path)
    with pytest.raises(ConfigError, match="declared: .*delay_risk"):
        load_task("no_such_task")


def test_bad_referenced_section_names_that_file(tmp_path: Path) -> None:
    bad_training = _write(tmp_path, "training", {"split": {"test_size": 2}})
    path = _write(
        tmp_path,
        "intent",
        {
            "name": "intent",
            "kind": "classification",
            "dataset": MINIMAL_DATASET,
            "training": str(bad_training),
        },
    )
    with pytest.raises(ConfigError) as err:
        training_config(load_task(path))
    assert str(bad_training) in str(err.value) and "key 'split.test_size'" in str(err.value)


def test_file_name_must_match_task_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFWISE_TASKS_DIR", str(tmp_path))
    _write(
        tmp_path, "intent", {"name": "other", "kind": "classification", "dataset": MINIMAL_DATASET}
    )
    with pytest.raises(ConfigError, match="key 'name'"):
        load_tasks()
