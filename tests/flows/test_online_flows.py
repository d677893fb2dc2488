"""flows/online.py on a SQLite tracking URI and store: the live comparison logged on the
challenger's version (tags, an MLflow run with the Evidently paired report), the gate with
online evidence promoting on a live win and aborting the challenger on live evidence against
it (both recorded), the canary ramp tag, and the alarm check rolling a worse champion back to
@previous with the reason recorded, then holding off during its cooldown."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import mlflow
import numpy as np
import pytest
import yaml

from shelfwise.configs.platform import PlatformConfig, TrackingConfig
from shelfwise.monitoring.store import PredictionRecord, PredictionStore
from shelfwise.registry import aliases as al
from shelfwise.registry.history import HistoryStore
from tests.serving.conftest import generated_frame

SPEC = {
    "kind": "tabular",
    "name": "baskets_flows",
    "target": "churned",
    "id_column": "customer",
    "categorical": ["channel", "region"],
    "numeric": ["visits", "spend"],
}
GATE = {
    "primary": {"metric": "roc_auc", "min_improvement": 0.0, "require_significant": False},
    "baseline": {"metric": "roc_auc"},
    "allow_fingerprint_mismatch": True,
    "online": {"min_labelled": 150},
}
ALARMS = {
    "enabled": True,
    "window_s": 3600,
    "min_requests": 50,
    "min_labelled": 50,
    "max_metric_drop": 0.05,
    "cooldown_s": 600,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Any:
    from shelfwise.configs.datasets import TabularDatasetSpec
    from shelfwise.configs.tabular_training import XGBoostParams
    from shelfwise.models.tabular import build_xgb_pipeline
    from shelfwise.registry import log as rlog

    folder = tmp_path_factory.mktemp("online-flows")
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    frame = generated_frame(600, seed=11)
    csv = folder / "baskets.csv"
    frame.to_csv(csv, index=False)
    spec = TabularDatasetSpec.model_validate({**SPEC, "path": str(csv)})
    X, y = frame[spec.features].astype({"visits": float}), frame[spec.target]
    mlflow.set_tracking_uri(tracking)
    exp = mlflow.create_experiment("flows", artifact_location=(folder / "art").as_uri())
    uris = []
    for n, depth in ((1, 1), (60, 3)):  # v1 weak, v2 strong (offline)
        pipe = build_xgb_pipeline(spec, XGBoostParams(n_estimators=n, max_depth=depth, n_jobs=1), 0)
        pipe.fit(X, y)
        with mlflow.start_run(experiment_id=exp):
            info = rlog.log_classifier(pipe, X.head(5), pipe.predict_proba(X.head(5)))
        uris.append(info.model_uri)
    tasks = folder / "tasks"
    tasks.mkdir()
    suffix = uuid.uuid4().hex[:6]
    names = {}
    for task in ("online_win", "online_lose", "online_alarm", "online_ramp"):
        name = f"{task}_{suffix}"
        for uri in uris:
            rlog.register_version(uri, name, {rlog.TAG_TASK: task})
        declaration = {
            "name": task,
            "kind": "classification",
            "model_name": name,
            "dataset": {**SPEC, "path": str(csv)},
            "gate": GATE,
            "alarms": ALARMS,
            "serving": {"id_field": "customer", "challenger": {"shadow": True}},
        }
        (tasks / f"{task}.yaml").write_text(yaml.safe_dump(declaration))
        names[task] = name
    platform = PlatformConfig(
        state_dir=folder / "state", data_dir=folder, tracking=TrackingConfig(uri=tracking)
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHELFWISE_TASKS_DIR", str(tasks))
        yield platform, names, mlflow.MlflowClient(tracking_uri=tracking)


def _live(platform, model: str, n: int, good: str, answered: str, shadow: str | None, seed=0):
    """n labelled requests answered by ``answered`` (shadowed by ``shadow``): the ``good``
    version's predictions follow the label, the other's are noise."""
    rng = np.random.default_rng(seed)
    store = PredictionStore(platform.store_url)
    now = datetime.now(UTC)
    y = rng.integers(0, 2, n)
    records, labels = [], {}
    for i in range(n):
        value = {
            v: float(np.clip(y[i] * 0.6 + 0.2 + rng.normal(0, 0.1), 0, 1))
            if v == good
            else float(rng.random())
            for v in {answered, shadow} - {None}
        }
        pid = uuid.uuid4().hex
        t = now - timedelta(seconds=n - i)
        records.append(
            PredictionRecord(
                pid,
                model,
                answered,
                {},
                {"probability": value[answered]},
                order_id=f"o{i}",
                created_at=t,
                latency_ms=1.0,
            )
        )
        if shadow is not None:
            records.append(
                PredictionRecord(
                    uuid.uuid4().hex,
                    model,
                    shadow,
                    {},
                    {"probability": value[shadow]},
                    order_id=f"o{i}",
                    created_at=t,
                    role="shadow",
                    pair_of=pid,
                )
            )
        labels[pid] = float(y[i])
    store.log_predictions(records)
    for pid, actual in labels.items():
        store.record_feedback(pid, actual=actual)
    store.dispose()


def _history(platform, model: str):
    store = HistoryStore.from_url(platform.store_url)
    try:
        return store.entries(model)
    finally:
        store.dispose()


def test_the_gate_promotes_on_a_live_win_and_logs_the_comparison(world) -> None:
    from shelfwise.flows.online import compare_live
    from shelfwise.flows.promote import run_gate

    platform, names, client = world
    name = names["online_win"]
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    _live(platform, name, 100, good="2", answered="1", shadow="2")
    waiting = run_gate(platform, name, "challenger", task="online_win")
    assert not waiting["promoted"]  # 100 of 150 labelled: wait, do not abort
    assert any("100 of 150" in r for r in waiting["reasons"])
    assert waiting["online"]["aborted"] is False
    assert al.alias_version(client, name, "challenger") == "2"
    _live(platform, name, 100, good="2", answered="1", shadow="2", seed=1)
    out = compare_live(platform, "online_win")
    assert out["labelled"] == 200 and out["interval"]["low"] > 0 and out["check"]["passed"]
    tags = client.get_model_version(name, "2").tags
    assert tags["shelfwise.online.labelled"] == "200"
    assert float(tags["shelfwise.online.improvement"]) > 0
    run = mlflow.get_run(out["run_id"])
    assert run.data.metrics["labelled"] == 200
    assert "reports/paired_report.html" in [
        a.path for a in client.list_artifacts(out["run_id"], "reports")
    ]
    promoted = run_gate(platform, name, "challenger", task="online_win")
    assert promoted["promoted"] and al.alias_version(client, name, "champion") == "2"
    last = _history(platform, name)[-1]
    assert last.decision == "promoted"
    assert any(c["name"] == "online:roc_auc" and c["passed"] for c in last.metrics["checks"])


def test_the_gate_aborts_a_challenger_the_live_evidence_is_against(world) -> None:
    from shelfwise.configs.online import CANARY_TAG
    from shelfwise.flows.promote import run_gate

    platform, names, client = world
    name = names["online_lose"]
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    _live(platform, name, 200, good="1", answered="1", shadow="2")  # offline winner loses live
    out = run_gate(platform, name, "challenger", task="online_lose")
    assert not out["promoted"] and out["online"]["aborted"]
    assert al.alias_version(client, name, "challenger") is None
    assert client.get_model_version(name, "2").tags[CANARY_TAG] == "0"
    refused, aborted = _history(platform, name)[-2:]
    assert refused.decision == "refused" and aborted.decision == "aborted"
    assert aborted.action == "online" and aborted.to_version == "2"
    assert al.alias_version(client, name, "champion") == "1"


def test_the_canary_ramp_sets_the_challengers_tag(world) -> None:
    from shelfwise.configs.online import CANARY_TAG
    from shelfwise.flows.online import set_canary

    platform, names, client = world
    name = names["online_ramp"]
    client.set_registered_model_alias(name, "challenger", "2")
    assert set_canary(platform, "online_ramp", 0.25)["version"] == "2"
    assert client.get_model_version(name, "2").tags[CANARY_TAG] == "0.25"
    with pytest.raises(al.RegistryError):
        set_canary(platform, "online_ramp", 1.5)


def test_an_alarm_rolls_a_worse_champion_back_then_cools_down(world) -> None:
    from shelfwise.flows.online import check_task_alarms
    from shelfwise.registry.promotion import promote_manual

    platform, names, client = world
    name = names["online_alarm"]
    client.set_registered_model_alias(name, "champion", "1")
    _live(platform, name, 200, good="1", answered="1", shadow=None)  # v1's good live record
    store = HistoryStore.from_url(platform.store_url)
    promote_manual(client, store, name, "2", "deliberately bad", actor="test")
    store.dispose()
    _live(platform, name, 200, good="1", answered="2", shadow=None, seed=2)  # v2 answers badly
    quiet = check_task_alarms(platform, "online_alarm", act=False)
    assert quiet["fired"] and not quiet["rolled_back"]  # report only
    out = check_task_alarms(platform, "online_alarm")
    assert out["fired"] and out["rolled_back"]
    assert out["reference_source"].startswith("live")
    assert al.alias_version(client, name, "champion") == "1"
    last = _history(platform, name)[-1]
    assert last.action == "rollback" and last.trigger == "alarm"
    assert "worse than @previous" in last.reason
    # v2 made champion again at once: the alarm still fires, but the cooldown holds it
    store = HistoryStore.from_url(platform.store_url)
    promote_manual(client, store, name, "2", "try again", actor="test")
    store.dispose()
    held = check_task_alarms(platform, "online_alarm")
    assert not held["fired"] and not held["rolled_back"]
    assert held["reasons"][0].startswith("in cooldown")
    assert al.alias_version(client, name, "champion") == "2"
    later = check_task_alarms(
        platform, "online_alarm", now=datetime.now(UTC) + timedelta(seconds=700), act=False
    )
    assert later["cooldown_until"] is not None
