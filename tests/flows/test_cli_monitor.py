"""`shelfwise monitor` / `retrain` end with a message, not a traceback, on a user's mistake."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from shelfwise.flows.cli import app


def test_monitor_names_the_missing_champion(tmp_path, monkeypatch, mlflow_server, prefect_harness):
    monkeypatch.setenv("SHELFWISE_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("SHELFWISE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    cfg = tmp_path / "monitoring.yaml"
    cfg.write_text(yaml.safe_dump({"model_name": "never_trained_model"}))
    result = CliRunner().invoke(app, ["monitor", "--config", str(cfg)])
    assert result.exit_code == 2, result.output
    last = " ".join(result.output.split("error:")[-1].split())  # the CLI's own last message
    assert "no registered model named 'never_trained_model'" in last, result.output


@pytest.mark.parametrize("command", ["monitor", "retrain"])
def test_bad_monitoring_config_names_file_and_key(tmp_path, monkeypatch, command):
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    cfg = tmp_path / "monitoring.yaml"
    cfg.write_text(yaml.safe_dump({"window": {"min_rows": -3}}))
    result = CliRunner().invoke(app, [command, "--config", str(cfg)])
    assert result.exit_code == 2, result.output
    assert "window.min_rows" in result.output and "monitoring.yaml" in result.output
