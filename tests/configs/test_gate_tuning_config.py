"""configs/gate.py and configs/tuning.py: shipped files load; bad files name file and key."""

from __future__ import annotations

import pytest

from shelfwise.configs.gate import load_gate_config
from shelfwise.configs.loader import ConfigError
from shelfwise.configs.tuning import load_tuning_config


def test_shipped_gate_rules_load_for_both_tasks():
    cfg = load_gate_config()
    delay = cfg.rule_for("delay_risk")
    assert delay.primary.metric == "roc_auc"
    assert {g.metric for g in delay.guardrails} == {"brier", "ece"}
    assert delay.floors["roc_auc"] == pytest.approx(0.70)
    assert delay.business_cost is not None
    assert cfg.rule_for("demand_forecast").primary.metric == "smape"
    with pytest.raises(ConfigError, match="rules.nope"):
        cfg.rule_for("nope")


def test_gate_rule_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "gate.yaml"
    bad.write_text("rules:\n  delay_risk:\n    primary: {metric: roc_auc, min_improvment: 0.1}\n")
    with pytest.raises(ConfigError) as err:
        load_gate_config(bad)
    assert str(bad) in str(err.value) and "min_improvment" in str(err.value)
    no_floor = tmp_path / "nofloor.yaml"
    no_floor.write_text("rules:\n  t:\n    primary: {metric: roc_auc}\n    floors: {}\n")
    with pytest.raises(ConfigError, match="key 'rules.t'.*a baseline or at least one floor"):
        load_gate_config(no_floor)


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
