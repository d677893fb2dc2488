from pathlib import Path

import pytest

from shelfwise.configs.loader import ConfigError, configs_dir, expand_env, load_config
from shelfwise.configs.platform import ENV_OVERRIDES, PlatformConfig, load_platform_config
from shelfwise.configs.tabular_training import TabularTrainingConfig
from shelfwise.configs.tasks import load_task, training_config


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_configs_load() -> None:
    cfg = training_config(load_task("delay_risk"))
    assert cfg.registered_model_name == "delay_risk"
    assert cfg.severity.critical == 0.7 and cfg.severity.warning == 0.5 and cfg.severity.info == 0.3
    assert (configs_dir() / "platform.yaml").is_file()


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    p = write(tmp_path, "xgboost:\n  max_dept: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p, TabularTrainingConfig)
    msg = str(exc.value)
    assert str(p) in msg and "xgboost.max_dept" in msg and "Extra inputs" in msg


def test_wrong_value_names_key_and_expected(tmp_path: Path) -> None:
    p = write(tmp_path, "split:\n  test_size: 1.5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p, TabularTrainingConfig)
    msg = str(exc.value)
    assert "split.test_size" in msg and "less than 1" in msg and "1.5" in msg


def test_unordered_severity_bands_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, "severity:\n  critical: 0.4\n  warning: 0.5\n")
    with pytest.raises(ConfigError, match="severity"):
        load_config(p, TabularTrainingConfig)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", TabularTrainingConfig)
    p = write(tmp_path, "split: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p, TabularTrainingConfig)
    p = write(tmp_path, "- a list\n", "list.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p, TabularTrainingConfig)


def test_env_overrides_uri_and_port(tmp_path: Path) -> None:
    p = write(tmp_path, "tracking:\n  port: 5000\n")
    env = {"SHELFWISE_TRACKING_URI": "http://mlflow.example:5000", "SHELFWISE_MLFLOW_PORT": "6123"}
    cfg = load_config(p, PlatformConfig, ENV_OVERRIDES, environ=env)
    assert cfg.tracking.uri == "http://mlflow.example:5000"
    assert cfg.tracking.port == 6123


def test_env_override_with_bad_value_names_key(tmp_path: Path) -> None:
    p = write(tmp_path, "{}\n")
    with pytest.raises(ConfigError, match="tracking.port"):
        load_config(p, PlatformConfig, ENV_OVERRIDES, environ={"SHELFWISE_MLFLOW_PORT": "abc"})


def test_expand_env_defaults() -> None:
    assert expand_env("${X:-a}/b", {}) == "a/b"
    assert expand_env("${X:-a}/b", {"X": "z"}) == "z/b"
    with pytest.raises(ConfigError, match="NOT_SET"):
        expand_env("${NOT_SET}", {})


def test_platform_defaults_derive_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("SHELFWISE_STORE_URL", raising=False)
    cfg = load_platform_config()
    assert cfg.store_url == f"sqlite:///{tmp_path / 'state' / 'shelfwise.db'}"
    assert cfg.mlflow_backend_store_uri.endswith("mlflow.db")
