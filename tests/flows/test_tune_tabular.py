"""tune-tabular in-process on a regression task no code names: the study minimises the task's
selection metric (RMSE) for the declared family, the best trial is refit, registered with its
family and study, and gated against the champion that train-tabular made."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from shelfwise.configs.loader import read_yaml
from shelfwise.registry import log as rlog
from tests.flows.tabular_helpers import demand_csv, regression_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_tune_a_regression_task_per_family_then_gate(
    mlflow_server, monkeypatch, prefect_harness, tmp_path: Path
) -> None:
    from shelfwise.flows.train import train_tabular
    from shelfwise.flows.tune import tune_tabular

    csv = demand_csv(tmp_path / "baskets.csv", n=800)
    task = regression_task(
        tmp_path,
        csv,
        candidates=["ridge", "random_forest"],
        tuning={
            "family": "random_forest",
            "n_trials": 3,
            "n_jobs": 1,
            "space": {
                "n_estimators": {"type": "int", "low": 20, "high": 60, "step": 20},
                "min_samples_leaf": {"type": "int", "low": 1, "high": 20},
            },
        },
    )
    name = read_yaml(task)["name"]
    monkeypatch.setenv("SHELFWISE_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / "home"))
    trained = train_tabular(task=str(task))
    assert trained["extra"]["gate"]["promoted"]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tuned = tune_tabular(task=str(task), storage=storage)
    assert tuned["study_name"] == f"{name}-random_forest"
    assert tuned["worker_trials"] == 3 and tuned["study_complete"] >= 1
    # RMSE: lower is better, so the study's best is its smallest CV mean
    import optuna

    study = optuna.load_study(study_name=tuned["study_name"], storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    done = [t.value for t in study.trials if t.value is not None]
    assert tuned["best_value"] == pytest.approx(min(done))
    client = mlflow.MlflowClient(mlflow_server)
    mv = client.get_model_version(name, tuned["registered_version"])
    assert mv.tags[rlog.TAG_FAMILY] == "random_forest"
    assert mv.tags[rlog.TAG_TASK] == name
    assert mv.tags["shelfwise.tuning.study"] == tuned["study_name"]
    assert float(mv.tags["metric.cv_rmse_mean"]) == pytest.approx(tuned["best_value"], 1e-5)
    gate = tuned["gate"]
    assert gate["candidate"] == tuned["registered_version"]
    assert gate["champion_before"] == trained["version"]
    checks = {c["name"] for c in gate["gate"]["checks"]}
    assert {"baseline:mean:rmse", "primary:rmse"} <= checks
