"""The fast featuriser + booster path equals the registered pipeline on the whole real dataset."""

from __future__ import annotations

import numpy as np
import pytest

from shelfwise.configs.tabular_training import SeverityBands
from shelfwise.models.fast_tabular import UnsupportedPipeline, build_fast_predictor
from shelfwise.registry.load import (
    ModelLoadError,
    load_tabular_model,
    prepare_tabular_model,
    resolve_alias,
)


@pytest.mark.integration
def test_fast_path_equals_registered_pipeline_on_all_rows(
    mlflow_server: str, delay_v1, shipping_frame
) -> None:
    import mlflow.sklearn

    df, spec = shipping_frame
    loaded = load_tabular_model(
        mlflow_server, delay_v1.name, delay_v1.version, bands=SeverityBands()
    )
    assert loaded.uses_fast_path, loaded.fast_path_note
    assert loaded.fast.trees is not None  # single rows take the compiled trees
    mlflow.set_tracking_uri(mlflow_server)
    registered = mlflow.sklearn.load_model(f"models:/{delay_v1.name}/{delay_v1.version}")
    expected = registered.predict_proba(df[spec.features])[:, 1]
    rows = df[spec.features].to_dict("records")
    fast_batch = loaded.predict_many(rows)
    np.testing.assert_allclose(fast_batch, expected, rtol=0, atol=1e-6)
    singles = np.array([loaded.predict_one(r) for r in rows[:500]])
    np.testing.assert_allclose(singles, expected[:500], rtol=0, atol=1e-6)
    assert 0.0 < expected.min() < expected.max() < 1.0  # a real, non-constant model


@pytest.mark.integration
def test_resolve_alias_and_missing_versions(mlflow_server: str, delay_v1) -> None:
    from shelfwise.registry.load import registry_client

    client = registry_client(mlflow_server)
    assert resolve_alias(client, delay_v1.name, "champion") == delay_v1.version
    assert resolve_alias(client, delay_v1.name, "no-such-alias") is None
    assert resolve_alias(client, "no_such_model_xyz", "champion") is None
    with pytest.raises(ModelLoadError, match="version 999"):
        load_tabular_model(mlflow_server, delay_v1.name, "999", bands=SeverityBands())


def test_unsupported_pipeline_falls_back_to_the_pipeline(shipping_frame) -> None:
    from shelfwise.configs.tabular_training import LogisticParams
    from shelfwise.models.tabular import build_pipeline, features_and_target

    df, spec = shipping_frame
    sample = df.sample(2000, random_state=1)
    X, y = features_and_target(sample, spec)
    pipe = build_pipeline("logistic", spec, LogisticParams()).fit(X, y)
    with pytest.raises(UnsupportedPipeline):
        build_fast_predictor(pipe)
    loaded = prepare_tabular_model(pipe, "m", "1", bands=SeverityBands())
    assert not loaded.uses_fast_path and "pipeline path" in loaded.fast_path_note
    rows = X.head(50).to_dict("records")
    np.testing.assert_allclose(loaded.predict_many(rows), pipe.predict_proba(X.head(50))[:, 1])
    assert loaded.severity(0.71) == "critical" and loaded.severity(0.3) == "none"


def test_regression_pipeline_and_missing_values(shipping_frame) -> None:
    """A regression pipeline answers its predictions; a row with a missing value goes through
    the pipeline (NaN), not the fast path."""
    from sklearn.linear_model import Ridge

    from shelfwise.configs.tabular_training import XGBoostParams
    from shelfwise.models.tabular import build_xgb_pipeline, features_and_target

    df, spec = shipping_frame
    sample = df.sample(1500, random_state=2)
    X, y = features_and_target(sample, spec)
    pipe = build_xgb_pipeline(spec, XGBoostParams(n_estimators=20, max_depth=3, n_jobs=1))
    pipe.fit(X, y)
    loaded = prepare_tabular_model(pipe, "m", "1", bands=SeverityBands())
    assert loaded.uses_fast_path
    row = {**X.iloc[0].to_dict(), "Weight_in_gms": None}
    nan_row = X.head(1).assign(Weight_in_gms=np.nan)
    assert loaded.predict_one(row) == pytest.approx(pipe.predict_proba(nan_row)[0, 1], abs=1e-7)
    # a missing category is an unknown one (all-zero one-hot); a column of nulls stays its kind
    assert "Gender" in loaded.categorical and "Weight_in_gms" not in loaded.categorical
    nulls = [
        {**r, "Gender": None, "Cost_of_the_Product": None} for r in X.head(3).to_dict("records")
    ]
    assert np.isfinite(loaded.predict_many(nulls)).all()

    reg = build_xgb_pipeline(spec, XGBoostParams(n_estimators=5, max_depth=2, n_jobs=1))
    reg.steps[-1] = ("model", Ridge())
    reg.fit(X, sample["Weight_in_gms"])
    loaded = prepare_tabular_model(reg, "r", "1", kind="regression")
    assert not loaded.uses_fast_path and loaded.severity(0.9) is None
    rows = X.head(5).to_dict("records")
    np.testing.assert_allclose(loaded.predict_many(rows), reg.predict(X.head(5)))
