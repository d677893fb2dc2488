"""`shelfwise monitor` / `retrain` end with a message, not a traceback, on a user's mistake."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from shelfwise.flows.cli import app


def test_monitor_names_the_missing_champion(
    tmp_path, monkeypatch, mlflow_server, prefect_harness, task_file
):
    monkeypatch.setenv("SHELFWISE_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("SHELFWISE_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    task = task_file()  # a unique model name, never trained
    model = yaml.safe_load(task.read_text())["model_name"]
    result = CliRunner().invoke(app, ["monitor", str(task)])
    assert result.exit_code == 2, result.output
    last = " ".join(result.output.split("error:")[-1].split())  # the CLI's own last message
    assert f"no registered model named '{model}'" in last, result.output


@pytest.mark.parametrize("command", ["monitor", "retrain"])
def test_bad_monitoring_section_names_file_and_key(tmp_path, monkeypatch, command, task_file):
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    task = task_file()
    raw = yaml.safe_load(task.read_text())
    raw["monitoring"]["window"]["min_rows"] = -3
    task.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, [command, str(task)])
    assert result.exit_code == 2, result.output
    assert "window.min_rows" in result.output and task.name in result.output


def test_unknown_task_lists_the_declared_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    result = CliRunner().invoke(app, ["monitor", "no_such_task"])
    assert result.exit_code == 2, result.output
    assert "no task 'no_such_task'" in result.output and "delay_risk" in result.output
