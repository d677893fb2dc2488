"""Shadow and canary through the service in process (its ASGI app) on a SQLite tracking URI:
three tasks on one generated CSV, each its own registered model with v1 @champion and v2
@challenger: ``churn_plain`` declares no challenger, ``churn_shadow`` a shadow, ``churn_canary``
a shadow and a 50% canary. Shadow rows are paired with the answer and scored by its feedback; a
shadow that raises, blocks or fails to load never changes or fails an answer and is reported in
/v1/versions; canary entities are answered by v2, stickily, and a ramp tag moves them back."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shelfwise.monitoring.store import PredictionStore
from shelfwise.serving.online import CANARY_TAG, in_canary
from tests.serving.conftest import generated_frame, served_client, service_env, write_tasks_dir

KEY = "online-key"
SPEC = {
    "kind": "tabular",
    "name": "baskets_online",
    "target": "churned",
    "id_column": "customer",
    "categorical": ["channel", "region"],
    "numeric": ["visits", "spend"],
}
TASKS = {
    "churn_plain": {},
    "churn_shadow": {"challenger": {"shadow": True, "queue_size": 4}},
    "churn_canary": {"challenger": {"shadow": True, "canary_fraction": 0.5}},
}


@dataclass
class Online:
    client: Any
    store: PredictionStore
    service: Any
    models: dict[str, str]  # task -> registered model
    v1: Any  # champion pipeline
    v2: Any  # challenger pipeline
    tracking: str


def _fit(frame: pd.DataFrame, n: int, seed: int):
    from shelfwise.configs.datasets import TabularDatasetSpec
    from shelfwise.configs.tabular_training import XGBoostParams
    from shelfwise.models.tabular import build_xgb_pipeline

    spec = TabularDatasetSpec.model_validate({**SPEC, "path": "unused.csv"})
    X, y = frame[spec.features], frame[spec.target]
    return build_xgb_pipeline(spec, XGBoostParams(n_estimators=n, max_depth=2, n_jobs=1), seed).fit(
        X, y
    ), X


@pytest.fixture(scope="module")
def online(tmp_path_factory) -> Any:
    import bentoml
    import mlflow

    from shelfwise.registry import log as rlog

    folder = tmp_path_factory.mktemp("online")
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    frame = generated_frame()
    csv = folder / "baskets.csv"
    frame.to_csv(csv, index=False)
    mlflow.set_tracking_uri(tracking)
    exp = mlflow.create_experiment("online", artifact_location=(folder / "artifacts").as_uri())
    v1, X = _fit(frame, 20, 0)
    v2, _ = _fit(frame, 5, 3)
    uris = []
    for pipe in (v1, v2):
        with mlflow.start_run(experiment_id=exp):
            uris.append(
                rlog.log_classifier(pipe, X.head(5), pipe.predict_proba(X.head(5))).model_uri
            )
    suffix = uuid.uuid4().hex[:6]
    models, extra = {}, {}
    client = mlflow.MlflowClient()
    for task, serving in TASKS.items():
        name = f"{task}_{suffix}"
        for uri in uris:
            rlog.register_version(uri, name, {rlog.TAG_TASK: task})
        client.set_registered_model_alias(name, "champion", "1")
        client.set_registered_model_alias(name, "challenger", "2")
        models[task] = name
        extra[task] = {
            "name": task,
            "kind": "classification",
            "model_name": name,
            "dataset": {**SPEC, "path": str(csv)},
            "serving": {"id_field": "customer", **serving},
        }
    tasks = write_tasks_dir(folder / "tasks", {}, extra)
    store_url = f"sqlite:///{folder / 'store.db'}"
    with served_client(service_env(tracking, store_url, tasks, KEY)) as (_, http):
        service = bentoml.get_current_service()
        yield Online(http, PredictionStore(store_url), service, models, v1, v2, tracking)


def _basket(i: int) -> dict[str, Any]:
    return {
        "customer": f"C-{i}",
        "channel": ["web", "app", "store"][i % 3],
        "region": ["north", "south", "east"][i % 3],
        "visits": i % 25,
        "spend": 10.0 + i,
    }


def _proba(pipe, body: dict[str, Any]) -> float:
    return float(pipe.predict_proba(pd.DataFrame([body]).drop(columns="customer"))[0, 1])


def _settle(online: Online, task: str) -> pd.DataFrame:
    scorer = online.service.online[task].shadow_scorer
    if scorer is not None:
        assert scorer.join()
    assert online.service.prediction_log.flush()
    return online.store.online_rows(online.models[task], "probability")


def _versions(online: Online) -> dict[str, dict[str, Any]]:
    r = online.client.post("/v1/versions")
    assert r.status_code == 200, r.text
    return {m["task"]: m for m in r.json()["models"]}


def test_shadow_scores_the_same_requests_and_feedback_pairs_them(online: Online) -> None:
    bodies = [_basket(i) for i in range(100, 112)]
    answers = []
    for body in bodies:
        r = online.client.post("/v1/churn-shadow/predict", json=body)
        assert r.status_code == 200, r.text
        answers.append(r.json())
        assert answers[-1]["model_version"] == "1"  # the shadow never answers
        assert answers[-1]["probability"] == pytest.approx(_proba(online.v1, body), abs=1e-6)
    for body in bodies[:6]:  # feedback by entity id lands on the answered row
        fb = online.client.post(
            "/v1/feedback",
            json={"order_id": body["customer"], "actual": 1},
            headers={"X-API-Key": KEY},
        )
        assert fb.status_code == 200, fb.text
    rows = _settle(online, "churn_shadow")
    rows = rows[rows["order_id"].isin([b["customer"] for b in bodies])]
    answered = rows[rows["role"] == "champion"].set_index("prediction_id")
    shadow = rows[rows["role"] == "shadow"].set_index("pair_of")
    assert set(answered.index) == {a["prediction_id"] for a in answers}
    assert set(shadow.index) == set(answered.index)  # one shadow per answer, paired
    assert set(shadow["model_version"]) == {"2"}
    for a, body in zip(answers, bodies, strict=True):
        assert shadow.loc[a["prediction_id"], "prediction"] == pytest.approx(
            _proba(online.v2, body), abs=1e-6
        )
    labelled = shadow[shadow["actual"].notna()]
    assert len(labelled) == 6 and set(labelled["actual"]) == {1.0}
    assert answered["latency_ms"].notna().all()
    status = _versions(online)["churn_shadow"]["challenger"]
    assert status["version"] == "2" and status["shadow"]["scored"] >= 12


def test_a_task_without_a_challenger_logs_no_shadow(online: Online) -> None:
    for i in range(5):
        r = online.client.post("/v1/churn-plain/predict", json=_basket(i))
        assert r.status_code == 200 and r.json()["model_version"] == "1"
    rows = _settle(online, "churn_plain")
    assert len(rows) >= 5 and set(rows["role"]) == {"champion"}
    assert _versions(online)["churn_plain"]["challenger"] is None


class Faulty:
    """The loaded challenger, made to raise or to block until released."""

    def __init__(self, model: Any, mode: str, gate: threading.Event | None = None) -> None:
        self._model, self._mode, self._gate = model, mode, gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict_many(self, rows):
        if self._mode == "raise":
            raise RuntimeError("injected challenger fault")
        assert self._gate is not None and self._gate.wait(30)
        return self._model.predict_many(rows)

    predict_one = predict_many


@pytest.mark.parametrize("mode", ["raise", "slow"])
def test_a_faulty_shadow_never_changes_or_fails_an_answer(online: Online, mode: str) -> None:
    task = online.service.online["churn_shadow"]
    loaded = task.follower.current
    gate = threading.Event()
    task.follower.current = Faulty(loaded, mode, gate)
    before = task.status()["shadow"]
    try:
        bodies = [_basket(i) for i in range(200, 210)]
        for body in bodies:  # a blocked shadow: every answer still returns (off the path)
            r = online.client.post("/v1/churn-shadow/predict", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["model_version"] == "1"
            assert r.json()["probability"] == pytest.approx(_proba(online.v1, body), abs=1e-6)
        shadow = _versions(online)["churn_shadow"]["challenger"]["shadow"]
        if mode == "raise":
            assert task.shadow_scorer.join()
            shadow = _versions(online)["churn_shadow"]["challenger"]["shadow"]
            assert shadow["errors"] >= before["errors"] + 10
            assert "injected challenger fault" in shadow["last_error"]
        else:  # queue_size 4: one job blocked, four waiting, the rest dropped and counted
            assert shadow["dropped"] >= before["dropped"] + 5
            assert shadow["scored"] == before["scored"]
    finally:
        gate.set()
        assert task.shadow_scorer.join()
        task.follower.current = loaded


def test_a_challenger_that_fails_to_load_is_reported_and_not_used(online: Online) -> None:
    import mlflow

    from shelfwise.registry import log as rlog

    name = online.models["churn_shadow"]
    broken = Path(online.store.url.removeprefix("sqlite:///")).parent / "broken-model"
    broken.mkdir(exist_ok=True)
    (broken / "MLmodel").write_text("not: a model\n")
    mlflow.set_tracking_uri(online.tracking)
    version = str(
        rlog.register_version(broken.as_uri(), name, {rlog.TAG_TASK: "churn_shadow"}).version
    )
    client = mlflow.MlflowClient()
    task = online.service.online["churn_shadow"]
    client.set_registered_model_alias(name, "challenger", version)
    try:
        assert task.follower.check() is False
        scored = task.shadow_scorer.scored
        r = online.client.post("/v1/churn-shadow/predict", json=_basket(300))
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        status = _versions(online)["churn_shadow"]["challenger"]
        assert status["alias_points_to"] == version and status["version"] == "2"
        assert status["last_error"] and status["last_error_version"] == version
        _settle(online, "churn_shadow")
        assert task.shadow_scorer.scored == scored  # v2 no longer @challenger: not shadowed
    finally:
        client.set_registered_model_alias(name, "challenger", "2")
        task.follower.check()


def test_canary_entities_are_answered_by_the_challenger_stickily(online: Online) -> None:
    ids = list(range(400, 440))
    seen: dict[str, str] = {}
    for _round in range(2):
        for i in ids:
            body = _basket(i)
            r = online.client.post("/v1/churn-canary/predict", json=body)
            assert r.status_code == 200, r.text
            version = r.json()["model_version"]
            canary = in_canary(body["customer"], 0.5, "churn_canary")
            assert version == ("2" if canary else "1")
            pipe = online.v2 if canary else online.v1
            assert r.json()["probability"] == pytest.approx(_proba(pipe, body), abs=1e-6)
            assert seen.setdefault(body["customer"], version) == version  # sticky
    assert 5 < sum(v == "2" for v in seen.values()) < 35
    batch = online.client.post(
        "/v1/churn-canary/batch", json={"rows": [_basket(i) for i in ids[:10]]}
    )
    assert batch.status_code == 200, batch.text
    assert [a["model_version"] for a in batch.json()] == [seen[f"C-{i}"] for i in ids[:10]]
    rows = _settle(online, "churn_canary")
    answered = rows[rows["role"].isin(["champion", "canary"])]
    assert set(answered.loc[answered["role"] == "canary", "model_version"]) == {"2"}
    shadow = rows[rows["role"] == "shadow"]  # the other version scored each answer
    pair = answered.set_index("prediction_id")["model_version"]
    assert (shadow["model_version"] != shadow["pair_of"].map(pair)).all()
    assert _versions(online)["churn_canary"]["challenger"]["canary_fraction"] == 0.5


def test_the_canary_tag_ramps_the_fraction_without_a_restart(online: Online) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=online.tracking)
    name = online.models["churn_canary"]
    task = online.service.online["churn_canary"]
    client.set_model_version_tag(name, "2", CANARY_TAG, "0")
    try:
        task.follower.check()
        assert _versions(online)["churn_canary"]["challenger"]["canary_fraction"] == 0.0
        for i in range(400, 420):
            r = online.client.post("/v1/churn-canary/predict", json=_basket(i))
            assert r.json()["model_version"] == "1"
        client.set_model_version_tag(name, "2", CANARY_TAG, "1")
        task.follower.check()
        for i in range(400, 405):
            assert (
                online.client.post("/v1/churn-canary/predict", json=_basket(i)).json()[
                    "model_version"
                ]
                == "2"
            )
    finally:
        client.delete_model_version_tag(name, "2", CANARY_TAG)
        task.follower.check()
