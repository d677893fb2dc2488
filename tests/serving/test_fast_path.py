"""The fast featuriser + booster path equals the registered pipeline on the whole real dataset."""

from __future__ import annotations

import numpy as np
import pytest

from shelfwise.configs.delay import SeverityBands
from shelfwise.models.fast_delay import UnsupportedPipeline, build_fast_predictor
from shelfwise.registry.load import (
    ModelLoadError,
    load_delay_model,
    prepare_delay_model,
    resolve_alias,
)


@pytest.mark.integration
def test_fast_path_equals_registered_pipeline_on_all_rows(
    mlflow_server: str, delay_v1, shipping_frame
) -> None:
    import mlflow.sklearn

    df, spec = shipping_frame
    loaded = load_delay_model(mlflow_server, delay_v1.name, delay_v1.version, SeverityBands())
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
        load_delay_model(mlflow_server, delay_v1.name, "999", SeverityBands())


def test_unsupported_pipeline_falls_back_to_the_pipeline(shipping_frame) -> None:
    from shelfwise.configs.delay import LogisticParams
    from shelfwise.models.tabular import build_pipeline, features_and_target

    df, spec = shipping_frame
    sample = df.sample(2000, random_state=1)
    X, y = features_and_target(sample, spec)
    pipe = build_pipeline("logistic", spec, LogisticParams()).fit(X, y)
    with pytest.raises(UnsupportedPipeline):
        build_fast_predictor(pipe)
    loaded = prepare_delay_model(pipe, "m", "1", SeverityBands())
    assert not loaded.uses_fast_path and "pipeline path" in loaded.fast_path_note
    rows = X.head(50).to_dict("records")
    np.testing.assert_allclose(loaded.predict_many(rows), pipe.predict_proba(X.head(50))[:, 1])
    assert loaded.severity(0.71) == "critical" and loaded.severity(0.3) == "none"
