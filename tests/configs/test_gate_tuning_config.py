"""Gate rules (a task's `gate`) and configs/tuning.py: shipped ones load, bad ones name the key."""

from __future__ import annotations

import pytest
import yaml

from shelfwise.configs.loader import ConfigError
from shelfwise.configs.tasks import gate_rule, load_task
from shelfwise.configs.tuning import load_tuning_config


def test_shipped_gate_rules_load_for_the_shipped_tasks():
    delay = gate_rule(load_task("delay_risk"))
    assert delay.primary.metric == "roc_auc"
    assert {g.metric for g in delay.guardrails} == {"brier", "ece"}
    assert delay.floors["roc_auc"] == pytest.approx(0.70)  # declared by this task only
    assert delay.baseline is not None and delay.business_cost is not None
    forecast = gate_rule(load_task("demand_forecast"))
    assert forecast.primary.metric == "smape" and forecast.floors == {}
    assert forecast.baseline is not None and forecast.baseline.metric == "smape"


def test_gate_rule_errors_name_file_and_key(tmp_path):
    def task_with(gate: dict):
        path = tmp_path / "t.yaml"
        body = {"name": "t", "kind": "classification", "dataset": "ecommerce_shipping"}
        path.write_text(yaml.safe_dump({**body, "gate": gate}))
        return path

    bad = task_with({"primary": {"metric": "roc_auc", "min_improvment": 0.1}})
    with pytest.raises(ConfigError) as err:
        load_task(bad)
    assert str(bad) in str(err.value) and "min_improvment" in str(err.value)
    no_floor = task_with({"primary": {"metric": "roc_auc"}, "floors": {}})
    with pytest.raises(ConfigError, match="a baseline or at least one floor"):
        load_task(no_floor)


def test_tuning_config_space_storage_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("SHELFWISE_OPTUNA_STORAGE", raising=False)
    cfg = load_tuning_config("delay_risk")
    assert {"max_depth", "learning_rate", "n_estimators", "gamma"} <= set(cfg.space)
    assert cfg.storage_url(tmp_path).startswith("sqlite:///") and "optuna.db" in cfg.storage_url(
        tmp_path
    )
    monkeypatch.setenv("SHELFWISE_OPTUNA_STORAGE", "postgresql://u@h/db")
    assert load_tuning_config("delay_risk").storage_url(tmp_path) == "postgresql://u@h/db"
    bad = tmp_path / "tuning.yaml"
    bad.write_text(
        "tasks:\n  delay_risk:\n    study_name: s\n"
        "    space:\n      depth: {type: int, low: 1, high: 3}\n"
    )
    with pytest.raises(ConfigError, match="depth"):
        load_tuning_config("delay_risk", bad)
