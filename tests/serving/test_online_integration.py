"""Shadow, canary and alarm rollback through the real servers, under concurrency-32 load: a
real `bentoml serve` (alias poll 1 s) in front of the session's `mlflow server`. Through one
continuous load: the challenger in shadow (every answer the champion's, shadow rows paired), a
canary ramp 0 -> 0.5 -> 0 (each entity answered by the version its sticky bucket says), the
challenger's alias removed (shadow off), then an alarm that fires on the champion and rolls it
back to @previous. Zero non-200s; every answer comes from the version it should."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
import yaml

from benchmarks.bench_push import SwapLoad
from shelfwise.configs.platform import PlatformConfig, StoreConfig, TrackingConfig
from shelfwise.flows.online import check_task_alarms
from shelfwise.monitoring.store import PredictionStore
from shelfwise.registry.server import free_port
from shelfwise.serving.online import CANARY_TAG, in_canary
from shelfwise.serving.run import start_serving, stop_serving
from tests.serving.conftest import write_tasks_dir
from tests.serving.test_serve_integration import ORDER, _wait_for

pytestmark = pytest.mark.integration

TASK = "delay_risk"


def test_shadow_canary_ramp_and_alarm_rollback_under_concurrency_32(
    mlflow_server: str, register_delay, forecast_v1, tmp_path: Path
) -> None:
    name = f"delay_risk_online_{uuid.uuid4().hex[:8]}"
    v1 = register_delay(name, n_estimators=20, seed=0)
    v2 = register_delay(name, n_estimators=30, seed=1, alias=None)
    client = mlflow.MlflowClient(mlflow_server)
    client.set_registered_model_alias(name, "challenger", v2.version)
    tasks = write_tasks_dir(tmp_path / "tasks", {TASK: name, "demand_forecast": forecast_v1.name})
    declared = tasks / f"{TASK}.yaml"
    raw = yaml.safe_load(declared.read_text())
    raw["serving"]["challenger"] = {"shadow": True}
    # an alarm sure to fire on any traffic: p99 latency above 1 microsecond
    raw["alarms"] = {
        "enabled": True,
        "window_s": 120,
        "min_requests": 50,
        "max_p99_latency_ms": 0.001,
        "cooldown_s": 3600,
    }
    declared.write_text(yaml.safe_dump(raw, sort_keys=False))
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    platform = PlatformConfig(
        state_dir=tmp_path / "state",
        tracking=TrackingConfig(uri=mlflow_server),
        store=StoreConfig(url=store_url),
    )
    server, _pid = start_serving(
        platform,
        mlflow_server,
        port=free_port(),
        env={
            "SHELFWISE_STORE_URL": store_url,
            "SHELFWISE_TASKS_DIR": str(tasks),
            "SHELFWISE_HOME": str(tmp_path / "state"),
            "SHELFWISE_POLL_INTERVAL_S": "1",
            "BENTOML_HOME": str(tmp_path / "bentoml"),
        },
    )
    http = httpx.Client(base_url=server.url, timeout=30)

    def served() -> dict:
        models = {m["task"]: m for m in http.post("/v1/versions").json()["models"]}
        return models[TASK]

    def challenger_with(**want):
        ch = served().get("challenger") or {}
        return ch if all(ch.get(k) == v for k, v in want.items()) else None

    store = PredictionStore(store_url)
    try:
        _wait_for(lambda: challenger_with(version=v2.version), 60, "the challenger loaded")
        with SwapLoad(server.url, "/v1/delay-risk", ORDER, concurrency=32) as load:
            # 1. shadow: the champion answers everything, the challenger scores it aside
            t0 = time.monotonic()
            time.sleep(3)
            shadow_phase = load.between(t0, time.monotonic())
            assert len(shadow_phase) > 50
            assert {a.version for a in shadow_phase} == {v1.version}

            # 2. canary ramp to 0.5: each entity's sticky bucket decides who answers
            client.set_model_version_tag(name, v2.version, CANARY_TAG, "0.5")
            _wait_for(lambda: challenger_with(canary_fraction=0.5), 60, "the canary at 0.5")
            t1 = time.monotonic()
            time.sleep(3)
            canary_phase = load.between(t1, time.monotonic())
            expected = [
                v2.version if in_canary(a.entity, 0.5, TASK) else v1.version for a in canary_phase
            ]
            wrong = [a for a, want in zip(canary_phase, expected, strict=True) if a.version != want]
            assert not wrong, wrong[:5]
            assert set(expected) == {v1.version, v2.version}

            # ... and back to 0: the champion answers every entity again
            client.set_model_version_tag(name, v2.version, CANARY_TAG, "0")
            _wait_for(lambda: challenger_with(canary_fraction=0.0), 60, "the canary at 0")
            t2 = time.monotonic()
            time.sleep(2)
            assert {a.version for a in load.between(t2, time.monotonic())} == {v1.version}

            # 3. shadow off: the challenger's alias is removed, nothing scores aside any more
            client.delete_registered_model_alias(name, "challenger")
            _wait_for(lambda: challenger_with(alias_points_to=None), 60, "the challenger gone")
            removed_at = datetime.now(UTC)  # answers after this have no shadow
            time.sleep(2)
            # 4. a "bad" champion: v2 promoted by hand, then its alarm rolls it back to v1
            client.set_registered_model_alias(name, "previous", v1.version)
            client.set_registered_model_alias(name, "champion", v2.version)
            _wait_for(
                lambda: load.first_from(v2.version, time.monotonic() - 0.5), 60, "v2 answering"
            )
            t3 = time.monotonic()
            _wait_for(
                lambda: len(load.between(t3, time.monotonic())) >= 200, 60, "200 answers from v2"
            )
            time.sleep(1.5)  # the service's prediction log reaches the store
            out = check_task_alarms(platform, str(declared))
            assert out["fired"] and out["rolled_back"], out
            assert any("p99 latency" in r for r in out["reasons"]), out["reasons"]
            assert out["rollback"]["champion_after"] == v1.version
            t4 = time.monotonic()
            _wait_for(lambda: load.first_from(v1.version, t4), 60, "v1 answering again")
            time.sleep(1.5)
            t5 = time.monotonic()
            time.sleep(1.5)
            assert {a.version for a in load.between(t5, time.monotonic())} == {v1.version}
            # the cooldown holds: a second check fires no second rollback
            again = check_task_alarms(platform, str(declared))
            assert not again["rolled_back"] and "cooldown" in " ".join(again["reasons"]), again

        statuses = {a.status for a in load.answers}
        assert statuses == {200} and not load.errors, load.errors[:5]
        assert len(load.answers) > 1000
        # shadow rows: the challenger's scores of answered requests, each paired with its answer
        rows = store.online_rows(name, raw["serving"]["output"])
        shadow = rows[rows["role"] == "shadow"]
        assert len(shadow) > 50
        # the other version than the answer's: v2 behind the champion, v1 behind a canary answer
        answered = rows[rows["role"] != "shadow"].set_index("prediction_id")["model_version"]
        assert set(shadow["pair_of"]) <= set(answered.index)
        pairs = answered.loc[shadow["pair_of"]].to_numpy()
        assert (pairs != shadow["model_version"].to_numpy()).all()
        assert set(shadow["model_version"]) == {v1.version, v2.version}
        # shadow off: no answer given after the challenger's alias was gone was shadowed
        created = rows.set_index("prediction_id")["created_at"]
        shadowed_at = pd.to_datetime(created.loc[shadow["pair_of"]], utc=True)
        assert (shadowed_at <= pd.Timestamp(removed_at)).all()
        later = rows[(pd.to_datetime(rows["created_at"], utc=True) > pd.Timestamp(removed_at))]
        assert len(later) > 50  # ... and there were such answers
        assert served()["challenger"]["shadow"]["errors"] == 0
    finally:
        store.dispose()
        http.close()
        stop_serving(server)
