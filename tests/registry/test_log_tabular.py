"""Every tabular family's pipeline logs as a self-contained sklearn-flavoured version (skops, with
the trusted types it needs) and loads back: a classifier's pyfunc returns probabilities, a
regressor's its predictions, missing numeric values included."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.datasets import TabularDatasetSpec
from shelfwise.configs.tabular_training import TabularTrainingConfig
from shelfwise.models.tabular import build_pipeline, predict
from shelfwise.registry import log as rlog
from shelfwise.registry.model_code import load_pyfunc

CASES = [
    ("classification", "logistic"),
    ("classification", "random_forest"),
    ("classification", "xgboost"),
    ("regression", "ridge"),
    ("regression", "random_forest"),
    ("regression", "xgboost"),
]


@pytest.mark.parametrize(("kind", "family"), CASES)
def test_family_logs_and_loads_with_the_same_predictions(
    kind: str, family: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"c": rng.choice(["a", "b"], 300), "x": rng.normal(size=300)})
    y = (
        (X["x"] > 0).astype(int).to_numpy()
        if kind == "classification"
        else X["x"].to_numpy().copy()
    )
    X.loc[::5, "x"] = np.nan
    spec = TabularDatasetSpec(name="t", path="t.csv", target="y", categorical=["c"], numeric=["x"])
    cfg = TabularTrainingConfig()
    params = cfg.params(family)
    if "n_estimators" in type(params).model_fields:
        params = params.model_copy(update={"n_estimators": 20, "n_jobs": 1})
    pipe = build_pipeline(family, spec, params, 0, kind).fit(X, y)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    example = X.head(20)
    with mlflow.start_run(experiment_id=exp):
        if kind == "classification":
            info = rlog.log_classifier(pipe, example, pipe.predict_proba(example))
        else:
            info = rlog.log_regressor(pipe, example, pipe.predict(example))
    out = np.asarray(load_pyfunc(info.model_uri).predict(X.head(30)))
    expected = predict(pipe, X.head(30), kind)
    got = out[:, 1] if kind == "classification" else out
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6)
