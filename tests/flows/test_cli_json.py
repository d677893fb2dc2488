"""Every ``--json`` command of the real ``shelfwise`` executable prints only JSON on stdout
(MLflow's "View run" lines, logs and rich output go to stderr); ``shelfwise gate`` scores a
version with its own task's evaluator; the platform's log lines reach the flow run's log in
Prefect.

One real MLflow server and one real Prefect server (session fixtures), small configs: the
delay-risk model with 2 CV folds and 60 trees, a forecaster on 2 series with 30 trees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import yaml

from shelfwise.configs.loader import read_yaml
from shelfwise.registry import log as rlog
from tests.flows.forecast_helpers import forecast_task
from tests.flows.stack_helpers import (
    all_flow_runs,
    log_messages,
    reduced_task,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))


@dataclass
class Cli:
    env: dict[str, str]
    cwd: Path
    tracking_uri: str
    prefect_api: str

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        p = subprocess.run(
            [SHELFWISE, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert p.returncode == code, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
        return p

    def json(self, *args: str, code: int = 0) -> tuple[object, str]:
        """(the parsed stdout, stderr); fails when stdout is anything but one JSON document."""
        p = self.run(*args, "--json", code=code)
        try:
            return json.loads(p.stdout), p.stderr
        except json.JSONDecodeError as exc:
            raise AssertionError(f"stdout is not JSON ({exc}):\n{p.stdout[:3000]}") from None


@pytest.fixture(scope="module")
def cli(tmp_path_factory, mlflow_server, prefect_api, data_dir) -> Cli:
    tmp = tmp_path_factory.mktemp("cli-json")
    # the CLI must set Prefect's extra loggers itself: none inherited from this process
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")}
    env = {
        **inherited,
        "SHELFWISE_TRACKING_URI": mlflow_server,
        "SHELFWISE_HOME": str(tmp / ".shelfwise"),
        "SHELFWISE_STORE_URL": f"sqlite:///{tmp / 'shelfwise.db'}",
        "SHELFWISE_DATA_DIR": str(data_dir),
        "SHELFWISE_ACTOR": "cli-json-test",
        "SHELFWISE_PREFECT_API_URL": prefect_api,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PYTHONUNBUFFERED": "1",
    }
    return Cli(env, tmp, mlflow_server, prefect_api)


@dataclass
class Trained:
    name: str
    config: Path
    result: dict
    stderr: str


@pytest.fixture(scope="module")
def delay(cli) -> Trained:
    """``shelfwise train <task YAML> --json`` on a reduced delay-risk declaration: v1, gated,
    @champion."""
    name = f"delay_risk_{uuid.uuid4().hex[:8]}"
    path = reduced_task(
        cli.cwd / f"{name}.yaml",
        model_name=name,
        experiment=name,
        training={"xgboost": {"n_jobs": 1}, "random_forest": {"n_estimators": 60}},
    )
    result, stderr = cli.json("train", str(path))
    return Trained(name, path, result, stderr)


@pytest.fixture(scope="module")
def forecast(cli) -> Trained:
    """``shelfwise train <forecast task YAML> --json`` on 2 series: v1, gated."""
    path = forecast_task(cli.cwd, horizon=28, max_series=2)
    training = Path(read_yaml(path)["training"])
    raw = read_yaml(training)
    raw["xgboost"]["n_estimators"] = 30
    training.write_text(yaml.safe_dump(raw, sort_keys=False))
    result, stderr = cli.json("train", str(path))
    return Trained(read_yaml(path)["model_name"], path, result, stderr)


def test_train_delay_risk_json(delay) -> None:
    r = delay.result
    assert r["model_name"] == delay.name and r["version"] == "1"
    assert r["metrics"]["roc_auc"] > 0.7 and "baseline_metrics" in r
    assert r["family"] in r["candidates"] and set(r["candidates"]) == {
        "logistic",
        "random_forest",
        "xgboost",
    }
    assert r["extra"]["gate"]["promoted"] and r["extra"]["gate"]["champion_after"] == "1"
    # MLflow's run links and the flows' logs were written, to stderr
    assert "View run" in delay.stderr and "registered" in delay.stderr


def test_flow_run_log_has_registration_and_gate_lines(delay, cli) -> None:
    runs = all_flow_runs(cli.prefect_api)
    (gate,) = [r for r in runs if r["parameters"].get("model_name") == delay.name]
    (train,) = [
        r
        for r in runs
        if r["parameters"].get("task") == str(delay.config) and r["id"] != gate["id"]
    ]
    assert gate["parent_task_run_id"] is not None  # the gate ran as the train flow's subflow
    registered = f"registered {delay.name} version 1"
    decision = f"gate {delay.name} v1 vs @champion=None: promote"

    def arrived() -> list[str] | None:
        # Prefect ships logs in batches from a background worker: wait for them
        messages = log_messages(cli.prefect_api, [train["id"], gate["id"]])
        have_decision = any(m.startswith(decision) for m in messages)
        return messages if registered in messages and have_decision else None

    messages = wait_for(arrived, 60, "the platform's lines in the flow-run logs")
    assert f"gating {delay.name} v1 for task delay_risk (classification)" in messages


def test_tune_then_gate_compare_history_json(delay, cli) -> None:
    study = f"cli-json-{uuid.uuid4().hex[:6]}"
    tuned, stderr = cli.json(
        "tune",
        str(delay.config),
        "--trials",
        "2",
        "--cv-folds",
        "2",
        "--no-pruning",
        "--no-promote",
        "--model-name",
        delay.name,
        "--study-name",
        study,
    )
    assert tuned["study_name"] == study and tuned["worker_trials"] == 2
    assert tuned["registered_version"] == "2" and tuned["gate"] is None
    assert "View run" in stderr

    out, _ = cli.json("gate", delay.name)  # @challenger = v2
    assert out["candidate"] == "2" and out["champion_before"] == "1"
    assert out["decision"] in {"promoted", "refused"}
    assert out["gate"]["primary_metric"] == "roc_auc"

    rows, _ = cli.json("compare", delay.name)
    assert sorted(r["version"] for r in rows) == ["1", "2"]
    assert all("roc_auc" in r["metrics"] for r in rows)

    events, _ = cli.json("history", delay.name)
    assert [(e["action"], e["to_version"]) for e in events] == [("gate", "1"), ("gate", "2")]
    assert events[1]["id"] == out["history_id"]


def test_monitor_json(delay, cli) -> None:
    result, _ = cli.json("monitor", str(delay.config), "--no-emit")
    assert result["model_name"] == delay.name and result["window_rows"] == 0
    assert result["decision"]["retrain"] is False


def test_train_demand_forecast_json(forecast) -> None:
    r = forecast.result
    assert r["model_name"] == forecast.name and r["version"] == "1" and r["n_series"] == 2
    assert {"smape", "mase", "coverage"} <= set(r["metrics"])
    assert r["gate"]["gate"]["primary_metric"] == "smape"
    assert "View run" in forecast.stderr


def _copy_version(client: mlflow.MlflowClient, name: str, version: str, drop: set[str]) -> str:
    """A new version of ``name`` holding ``version``'s model and tags, less the ``drop``ped."""
    mlflow.set_tracking_uri(client.tracking_uri)
    src = client.get_model_version(name, version)
    tags = {k: v for k, v in src.tags.items() if k not in drop}
    mv = mlflow.register_model(src.source, name, tags=tags)
    assert mv.run_id == src.run_id
    wait_for(lambda: client.get_model_version(name, mv.version).status == "READY", 60, "READY")
    return str(mv.version)


def test_gate_uses_the_versions_own_task(forecast, cli) -> None:
    """`shelfwise gate <forecaster>` (no task given) is decided by the forecast gate: SMAPE on
    the version's stored backtest holdout, with the forecast-only comparability check."""
    client = mlflow.MlflowClient(cli.tracking_uri)
    v1 = client.get_model_version(forecast.name, "1")
    assert v1.tags[rlog.TAG_TASK] == read_yaml(forecast.config)["name"]
    v2 = _copy_version(client, forecast.name, "1", drop=set())
    out, stderr = cli.json("gate", forecast.name, "--candidate", v2)
    gate = out["gate"]
    assert gate["primary_metric"] == "smape"
    assert {"smape", "mae"} <= set(gate["challenger_metrics"])
    assert "roc_auc" not in gate["challenger_metrics"]
    checks = {c["name"] for c in gate["checks"]}
    if out["champion_before"] is not None:  # v1 passed the floor: compared with it
        assert "champion_comparable" in checks
    assert f"gating {forecast.name} v{v2} for task " in stderr and "(forecast)" in stderr
    (entry,) = [e for e in cli.json("history", forecast.name)[0] if e["to_version"] == v2]
    assert entry["primary_metric"] == "smape" and entry["id"] == out["history_id"]


class _Untagged(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_gate_without_task_tag_names_version_and_tag(forecast, cli) -> None:
    client = mlflow.MlflowClient(cli.tracking_uri)
    before = dict(client.get_registered_model(forecast.name).aliases)
    mlflow.set_tracking_uri(cli.tracking_uri)
    with mlflow.start_run(experiment_id=forecast.result["experiment_id"]):  # a run without tags
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_Untagged(), pip_requirements=["mlflow"]
        )
    version = str(mlflow.register_model(info.model_uri, forecast.name).version)
    history_before = cli.json("history", forecast.name)[0]
    p = cli.run("gate", forecast.name, "--candidate", version, "--json", code=2)
    assert p.stdout == ""
    message = " ".join(p.stderr.split())
    assert f"{forecast.name} version {version} has no '{rlog.TAG_TASK}' tag" in message
    assert dict(client.get_registered_model(forecast.name).aliases) == before
    assert cli.json("history", forecast.name)[0] == history_before  # nothing recorded


def test_version_task_falls_back_to_the_run_tag(forecast, cli) -> None:
    from shelfwise.flows.promote import version_task

    client = mlflow.MlflowClient(cli.tracking_uri)
    version = _copy_version(client, forecast.name, "1", drop={rlog.TAG_TASK})
    mv = client.get_model_version(forecast.name, version)
    assert rlog.TAG_TASK not in mv.tags
    assert version_task(client, mv) == str(forecast.config)  # the run's task_source


def test_stack_up_status_down_json(cli) -> None:
    """Tracking and Prefect are external here (the session's servers): the stack starts only its
    worker, whose environment sends the platform's loggers to the flow-run logs."""
    stack = cli.cwd / "stack.yaml"
    stack.write_text(
        yaml.safe_dump({"serving": {"enabled": "never"}, "evidently": {"enabled": "never"}})
    )
    try:
        states, _ = cli.json("stack", "up", "--stack", str(stack))
        by = {s["component"]: s for s in states}
        assert by["worker"]["state"] in {"started", "reused"}, states
        assert by["mlflow"]["state"] == by["prefect"]["state"] == "external"
        environ = Path(f"/proc/{by['worker']['pid']}/environ").read_bytes().split(b"\0")
        assert b"PREFECT_LOGGING_EXTRA_LOGGERS=shelfwise" in environ
        status, _ = cli.json("stack", "status", "--stack", str(stack))
        assert {s["component"]: s["state"] for s in status}["worker"] == "running"
    finally:
        down, _ = cli.json("stack", "down", "--stack", str(stack))
    assert {s["component"]: s["state"] for s in down}["worker"] == "stopped"
