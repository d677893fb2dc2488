"""train-delay-risk through a real `mlflow server` (SQLite, then PostgreSQL backend store)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from shelfwise.configs.loader import read_yaml
from shelfwise.registry import log as rlog

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _train(cfg_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_uri: str, **kw) -> dict:
    from shelfwise.flows.train import train_delay_risk

    monkeypatch.setenv("SHELFWISE_TRACKING_URI", tracking_uri)
    return train_delay_risk(config=str(cfg_path), **kw)


def _assert_registered_version(uri: str, name: str, result: dict) -> None:
    client = MlflowClient(tracking_uri=uri)
    mv = client.get_model_version(name, result["version"])
    for tag in (
        rlog.TAG_DATA_FINGERPRINT,
        rlog.TAG_EVAL_FINGERPRINT,
        rlog.TAG_CODE_VERSION,
        rlog.TAG_CONFIG_HASH,
        rlog.TAG_TASK,
    ):
        assert mv.tags.get(tag), f"missing tag {tag}"
    assert mv.tags[rlog.TAG_DATA_FINGERPRINT] == result["data_fingerprint"]
    assert float(mv.tags["metric.roc_auc"]) == pytest.approx(result["metrics"]["roc_auc"], 1e-5)
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["roc_auc"] >= 0.73
    assert run.data.metrics["roc_auc"] >= result["baseline_metrics"]["roc_auc"]
    contexts = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context")
        for d in run.inputs.dataset_inputs
    }
    assert contexts == {"training", "evaluation"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc.png", "plots/calibration.png", "plots/feature_importance.png"} <= artifacts
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(f"models:/{name}/{result['version']}")
    assert info.signature is not None and info.signature.inputs is not None
    assert info.saved_input_example_info is not None
    baseline = client.get_run(result["baseline_run_id"])
    # same metric names on both families: the compare view lines them up
    assert {"roc_auc", "pr_auc", "brier", "log_loss", "f1", "accuracy"} <= set(
        baseline.data.metrics
    ) & set(run.data.metrics)


def _predict_real_rows(uri: str, name: str, version: str, data_dir: Path) -> None:
    from shelfwise.configs.datasets import load_tabular_spec
    from shelfwise.models.datasets import load_tabular

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    spec = load_tabular_spec("ecommerce_shipping")
    rows, _ = load_tabular(spec, data_dir)
    out = model.predict(rows[spec.features].head(20))
    proba = out[:, 1] if hasattr(out, "shape") else out.iloc[:, 1]
    assert ((proba >= 0) & (proba <= 1)).all()


def test_train_registers_version_on_sqlite_server(
    mlflow_server, delay_config, monkeypatch, prefect_harness, data_dir
) -> None:
    cfg = delay_config()
    name = read_yaml(cfg)["registered_model_name"]
    result = _train(cfg, monkeypatch, mlflow_server)
    assert result["version"] == "1"
    _assert_registered_version(mlflow_server, name, result)
    _predict_real_rows(mlflow_server, name, result["version"], data_dir)
    second = _train(cfg, monkeypatch, mlflow_server)
    assert second["version"] == "2"
    # deterministic training on the same data: the same fingerprint and the same score
    assert second["data_fingerprint"] == result["data_fingerprint"]
    assert second["metrics"]["roc_auc"] == pytest.approx(result["metrics"]["roc_auc"])


@pytest.mark.postgres
def test_train_registers_version_with_postgres_backend(
    pg_database, platform_factory, delay_config, monkeypatch, prefect_harness
) -> None:
    from shelfwise.registry.tracking import ensure_tracking_uri, stop_tracking_server

    platform = platform_factory(
        backend=pg_database.replace("postgresql://", "postgresql+psycopg2://")
    )
    uri = ensure_tracking_uri(platform)
    try:
        cfg = delay_config()
        name = read_yaml(cfg)["registered_model_name"]
        result = _train(cfg, monkeypatch, uri)
        _assert_registered_version(uri, name, result)
    finally:
        stop_tracking_server(platform)


def test_bad_csv_registers_nothing(
    mlflow_server, delay_config, monkeypatch, prefect_harness, data_dir, tmp_path
) -> None:
    import pandas as pd
    import yaml

    from shelfwise.configs.loader import configs_dir
    from shelfwise.models.datasets import DatasetError

    # the export a user would have: the shipping CSV (UTF-8 BOM), row 100 with a word for a number
    rows = pd.read_parquet(data_dir / "ecommerce_shipping" / "ecommerce_shipping.parquet")
    text = rows.head(99).to_csv(index=False) + "100,D,Flight,four,2,177,3,low,F,44,1233,1\n"
    bad_csv = tmp_path / "Train.csv"
    bad_csv.write_text(text, encoding="utf-8-sig")
    spec = read_yaml(configs_dir() / "datasets" / "ecommerce_shipping.yaml")
    spec.update({"path": str(bad_csv), "format": "csv", "encoding": "utf-8-sig"})
    spec_path = tmp_path / "shipping_export.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    cfg = delay_config(dataset=str(spec_path))
    name = read_yaml(cfg)["registered_model_name"]
    with pytest.raises(DatasetError, match=r"Customer_care_calls.*row 100"):
        _train(cfg, monkeypatch, mlflow_server)
    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.search_model_versions(f"name='{name}'") == []


def test_failed_training_marks_run_failed_and_registers_nothing(
    mlflow_server, delay_config, monkeypatch, prefect_harness
) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("disk full while saving the model")

    monkeypatch.setattr(rlog, "log_classifier", boom)
    cfg = delay_config()
    name = read_yaml(cfg)["registered_model_name"]
    with pytest.raises(RuntimeError, match="disk full"):
        _train(cfg, monkeypatch, mlflow_server)
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.`shelfwise.model_family` = 'xgboost'")
    assert len(runs) == 1
    assert runs[0].info.status == "FAILED"
    assert "disk full" in runs[0].data.tags[rlog.TAG_ERROR]
    assert client.search_model_versions(f"name='{name}'") == []
