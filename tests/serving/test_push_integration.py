"""Swaps pushed by the registry, through the real servers: the session's `mlflow server` delivers
its signed alias webhook to a real `bentoml serve` that polls only hourly. Under concurrency-32
load, 10 alias moves are each answered by the new version (the poll cannot explain it), with
zero non-200s and no old-version answer once the new one has answered; a forged or unsigned
delivery is refused and changes nothing."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import mlflow
import pytest

from benchmarks.bench_push import SwapLoad, swap_under_load
from shelfwise.configs.platform import PlatformConfig
from shelfwise.registry.server import free_port
from shelfwise.registry.webhooks import WEBHOOK_NAME, ensure_alias_webhook
from shelfwise.serving.push import sign
from shelfwise.serving.run import start_serving, stop_serving
from tests.serving.conftest import write_tasks_dir
from tests.serving.test_serve_integration import ORDER

pytestmark = pytest.mark.integration

SECRET = "integration-push-secret"


def test_pushed_swaps_under_concurrency_32_and_forged_deliveries(
    mlflow_server: str, register_delay, forecast_v1, tmp_path: Path
) -> None:
    name = f"delay_risk_push_{uuid.uuid4().hex[:8]}"
    v1 = register_delay(name, n_estimators=20, seed=0)
    v2 = register_delay(name, n_estimators=30, seed=1, alias=None)
    client = mlflow.MlflowClient(mlflow_server)
    tasks = {"delay_risk": name, "demand_forecast": forecast_v1.name}
    server, _pid = start_serving(
        PlatformConfig(state_dir=tmp_path / "state"),
        mlflow_server,
        port=free_port(),
        env={
            "SHELFWISE_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
            "SHELFWISE_TASKS_DIR": str(write_tasks_dir(tmp_path / "tasks", tasks)),
            "SHELFWISE_HOME": str(tmp_path / "state"),
            "SHELFWISE_POLL_INTERVAL_S": "3600",  # only a pushed event can swap in this test
            "SHELFWISE_WEBHOOK_SECRET": SECRET,
            "BENTOML_HOME": str(tmp_path / "bentoml"),
        },
    )
    hook = ensure_alias_webhook(
        client, f"{server.url}/v1/registry/events", SECRET, name=f"{WEBHOOK_NAME}-{name}"
    )
    http = httpx.Client(base_url=server.url, timeout=30)

    def served() -> dict:
        models = {m["task"]: m for m in http.post("/v1/versions").json()["models"]}
        return models["delay_risk"]

    try:
        assert http.post("/v1/versions").json()["push"] is True
        assert served()["version"] == v1.version
        time.sleep(2.5)  # the tracking server caches its webhook list for 2 s

        with SwapLoad(server.url, "/v1/delay-risk", ORDER, concurrency=32) as load:
            result = swap_under_load(
                load,
                lambda v: client.set_registered_model_alias(name, "champion", v),
                [v1.version, v2.version],
                swaps=10,
                timeout_s=60,
            )
        assert result["statuses"] == {200: result["answers"]}, load.errors[:5]
        assert result["transport_errors"] == 0 and result["stale_answers"] == 0, result
        assert len(result["lags_s"]) == 10 and result["answers"] > 200
        status = served()
        assert status["swaps"] == 11 and status["wakes"] >= 10, status
        final = status["version"]

        # forged and unsigned deliveries: refused, and nothing moves or reloads
        body = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": name, "alias": "champion", "version": v1.version},
            }
        ).encode()
        ts = str(int(time.time()))
        forged = {
            "X-MLflow-Delivery-Id": "forged-1",
            "X-MLflow-Timestamp": ts,
            "X-MLflow-Signature": sign("wrong-secret", "forged-1", ts, body),
        }
        for headers in (forged, {}):
            r = http.post("/v1/registry/events", content=body, headers=headers)
            assert r.status_code == 401, r.text
        time.sleep(0.5)
        after = served()
        assert (after["version"], after["swaps"], after["wakes"]) == (
            final,
            status["swaps"],
            status["wakes"],
        )
    finally:
        client.delete_webhook(hook.webhook_id)
        stop_serving(server)
