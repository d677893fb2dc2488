"""Tuning workers in separate processes sharing one PostgreSQL-backed Optuna study, then the
tuning flow's refit -> @challenger -> gate path, after the train flow's train -> gate path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import mlflow
import optuna
import pytest

from shelfwise.registry import aliases as al
from shelfwise.registry.history import HistoryStore

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, mlflow_server: str, store_url: str, name: str) -> dict[str, str]:
    return {
        **os.environ,
        "SHELFWISE_TRACKING_URI": mlflow_server,
        "SHELFWISE_HOME": str(tmp_path / name),
        "SHELFWISE_STORE_URL": store_url,
        "PREFECT_HOME": str(tmp_path / name / "prefect"),
        "PYTHONUNBUFFERED": "1",
    }


def test_two_workers_share_a_postgres_study_then_refit_registers_and_gates(
    mlflow_server, prefect_api, pg_database, tmp_path, monkeypatch, data_dir, task_file
):
    study = f"workers-{uuid.uuid4().hex[:8]}"
    model = f"delay_risk_{uuid.uuid4().hex[:8]}"
    store_url = f"sqlite:///{tmp_path / 'shelfwise.db'}"
    # the shipped declaration, one XGBoost thread (parallelism comes from the workers)
    task = task_file(training={"xgboost": {"n_jobs": 1}, "split": {"cv_folds": 3}})
    per_worker = 3
    # the study (and Optuna's schema) exists before the workers start, as after `tune --trials 0`
    optuna.create_study(study_name=study, storage=pg_database, direction="maximize")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shelfwise.flows.cli",
                "tune",
                "delay-risk",
                "--trials",
                str(per_worker),
                "--storage",
                pg_database,
                "--study-name",
                study,
                "--seed-offset",
                str(i),
                "--no-register",
                "--model-name",
                model,
                "--json",
            ],
            cwd=REPO,
            env={
                **_env(tmp_path, mlflow_server, store_url, f"w{i}"),
                "PREFECT_API_URL": prefect_api,
                "NO_COLOR": "1",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outputs.append(json.loads(out))  # with --json, stdout is the JSON alone

    loaded = optuna.load_study(study_name=study, storage=pg_database)
    numbers = [t.number for t in loaded.trials]
    assert len(numbers) == 2 * per_worker == sum(o["worker_trials"] for o in outputs)
    assert sorted(numbers) == list(range(2 * per_worker))  # no duplicate, none lost
    # one best for the study: the later worker reports it, the earlier one nothing better
    assert max(o["best_value"] for o in outputs) == pytest.approx(loaded.best_value)
    assert all(o["best_value"] <= loaded.best_value for o in outputs)
    assert len({(o["study_name"], o["parent_run_id"]) for o in outputs}) == 2

    # one nested MLflow run per trial, under the two workers' parent runs
    client = mlflow.MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("delay_risk")
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`shelfwise.tuning.study` = '{study}'", max_results=100
    )
    trial_runs = [r for r in runs if "shelfwise.tuning.trial" in r.data.tags]
    assert sorted(int(r.data.tags["shelfwise.tuning.trial"]) for r in trial_runs) == numbers
    parents = {o["parent_run_id"] for o in outputs}
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == parents
    for r in trial_runs:
        state = r.data.tags["shelfwise.tuning.state"]
        assert state in {"complete", "pruned"}
        assert ("cv_roc_auc_mean" in r.data.metrics) == (state == "complete")
    parent = client.get_run(outputs[0]["parent_run_id"])
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "tuning")}
    assert "tuning/optimization_history.png" in arts

    # in-process: train flow (train -> register -> gate), then the tuning flow's refit of the
    # shared study's best (no new trials) -> @challenger -> gate against that champion
    for k, v in _env(tmp_path, mlflow_server, store_url, "flows").items():
        monkeypatch.setenv(k, v)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from shelfwise.flows.train import train_tabular
    from shelfwise.flows.tune import tune_tabular

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        trained = train_tabular(task=str(task), model_name=model, trigger="schedule")
        tuned = tune_tabular(
            task=str(task), n_trials=0, storage=pg_database, study_name=study, model_name=model
        )
    assert trained["extra"]["gate"]["decision"] == "promoted"  # first version, passes floors
    assert tuned["worker_trials"] == 0 and tuned["study_trials"] == 2 * per_worker
    version = tuned["registered_version"]
    mv = client.get_model_version(model, version)
    assert mv.tags["shelfwise.tuning.study"] == study
    assert mv.tags["shelfwise.tuning.trial"] == str(loaded.best_trial.number)
    gate = tuned["gate"]
    assert gate["candidate"] == version and gate["champion_before"] == trained["version"]
    champion = al.alias_version(client, model, al.CHAMPION)
    challenger = al.alias_version(client, model, al.CHALLENGER)
    if gate["promoted"]:
        assert champion == version and challenger is None
    else:
        assert champion == trained["version"] and challenger == version
    store = HistoryStore.from_url(store_url)
    try:
        hist = store.entries(model)
    finally:
        store.dispose()
    assert [(e.to_version, e.decision) for e in hist] == [
        (trained["version"], "promoted"),
        (version, gate["decision"]),
    ]
    assert hist[0].trigger == "schedule"
