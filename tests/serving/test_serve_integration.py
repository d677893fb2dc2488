"""A real `bentoml serve` subprocess against the real MLflow server: predict -> logged -> feedback
joined -> a new version is promoted -> served within the poll interval, while a client loop sees
zero failed requests; a broken version is refused and the old one keeps serving; a graceful stop
writes every logged prediction. One demand forecast goes through the same server (its champion is
the small session hybrid), and actuals posted to it move the origin of the next forecast."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import mlflow
import pytest

from shelfwise.configs.platform import PlatformConfig
from shelfwise.monitoring.store import PredictionStore
from shelfwise.registry.server import free_port
from shelfwise.serving.keys import KeyStore
from shelfwise.serving.run import start_serving, stop_serving
from tests.serving.conftest import write_tasks_dir

pytestmark = pytest.mark.integration

KEY = "integration-key"
POLL_S = 1.0
ORDER = {
    "order_id": "INT-1",
    "warehouse_block": "A",
    "shipment_mode": "Flight",
    "customer_care_calls": 3,
    "customer_rating": 5,
    "prior_purchases": 2,
    "gender": "M",
    "product_importance": "high",
    "cost": 180.0,
    "discount": 2.0,
    "weight": 4200.0,
}


class ClientLoop:
    """Single-row requests back to back on a thread; counts every outcome."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.versions: Counter[str] = Counter()
        self.ok_ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                try:
                    r = client.post("/v1/delay-risk", json={**ORDER, "order_id": f"loop-{i}"})
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    body = r.json()
                    self.versions[body["model_version"]] += 1
                    self.ok_ids.append(body["prediction_id"])
                else:
                    self.errors.append(f"{r.status_code}: {r.text[:200]}")

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def _register_broken_version(name: str) -> str:
    """A version that is not a scikit-learn model: loading it for delay risk must fail."""

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [0.5] * len(model_input)

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant())
    return str(mlflow.register_model(info.model_uri, name).version)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_serve_follow_swap_feedback_and_graceful_stop(
    mlflow_server: str, register_delay, forecast_v1, tmp_path: Path
) -> None:
    name = f"delay_risk_serve_{uuid.uuid4().hex[:8]}"
    v1 = register_delay(name, n_estimators=30, seed=0)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    platform = PlatformConfig(state_dir=tmp_path / "state")
    server, _pid = start_serving(
        platform,
        mlflow_server,
        port=free_port(),
        env={
            "SHELFWISE_STORE_URL": store_url,
            "SHELFWISE_API_KEY": KEY,
            "SHELFWISE_TASKS_DIR": str(
                write_tasks_dir(
                    tmp_path / "tasks", {"delay_risk": name, "demand_forecast": forecast_v1.name}
                )
            ),
            "SHELFWISE_POLL_INTERVAL_S": str(POLL_S),
            "BENTOML_HOME": str(tmp_path / "bentoml"),
        },
    )
    store = PredictionStore(store_url)
    keys = KeyStore(store_url)
    tenant_key, tenant_raw = keys.create("default", ["feedback"], "integration")
    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        r = http.post("/v1/delay-risk", json=ORDER)
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["model_version"] == v1.version

        # the prediction reaches the log (written off the request path)
        logged = _wait_for(
            lambda: first["prediction_id"] in set(store.predictions_frame(name)["prediction_id"]),
            10,
            "the prediction in the log",
        )
        assert logged
        fb = http.post(
            "/v1/feedback",
            json={"order_id": "INT-1", "actual": 1},
            headers={"X-API-Key": KEY},
        )
        assert fb.status_code == 200 and fb.json()["prediction_id"] == first["prediction_id"]
        row = store.predictions_frame(name).set_index("prediction_id").loc[first["prediction_id"]]
        assert row["actual"] == 1.0 and row["Weight_in_gms"] == 4200
        assert store.count_predictions(name, tenant="default") >= 1

        # a tenant's key from the store works in the real worker; its scope is enforced; once
        # revoked it stops working within auth.key_cache_ttl_s, without a restart
        again = {"json": {"order_id": "INT-1", "actual": 1}, "headers": {"X-API-Key": tenant_raw}}
        fb = http.post("/v1/feedback", **again)
        assert fb.status_code == 200 and fb.json()["status"] == "unchanged", fb.text
        assert http.post("/v1/admin/reload", headers=again["headers"]).status_code == 401
        keys.revoke(tenant_key.key_id)
        _wait_for(lambda: http.post("/v1/feedback", **again).status_code == 401, 15, "revocation")

        fc = http.post(
            "/v1/forecast",
            json={
                "series": {"store": 1, "item": 1},
                "horizon": 7,
                "lead_time": 3,
                "service_level": 0.9,
                "on_hand": 60.0,
            },
        )
        assert fc.status_code == 200, fc.text
        forecast = fc.json()
        assert forecast["model_version"] == forecast_v1.version and len(forecast["forecast"]) == 7
        assert 0 <= forecast["inventory"]["stockout_probability"] <= 1
        forecast_id = forecast["prediction_id"]
        assert forecast["origin"] == "2017-12-31"  # no actuals yet: the training end
        # three days of actuals move the origin of that series' next forecast
        days = [f"2018-01-0{d}" for d in (1, 2, 3)]
        rows = [{"store": 1, "item": 2, "date": d, "sales": 25.0} for d in days]
        ingest = http.post(
            "/v1/demand-forecast/actuals", json={"rows": rows}, headers={"X-API-Key": KEY}
        )
        assert ingest.status_code == 200 and ingest.json()["inserted"] == 3, ingest.text
        moved = http.post("/v1/forecast", json={"series": {"store": 1, "item": 2}, "horizon": 7})
        assert moved.status_code == 200, moved.text
        assert moved.json()["origin"] == "2018-01-03" and moved.json()["actuals_used"] == 3
        assert moved.json()["forecast"][0]["date"] == "2018-01-04"

        metrics = http.get("/metrics")
        assert metrics.status_code == 200 and "bentoml_service_request" in metrics.text

        with ClientLoop(server.url) as loop:
            time.sleep(1.0)
            v2 = register_delay(name, n_estimators=60, seed=1)  # sets @champion to v2
            promoted_at = time.monotonic()

            def serving_v2():
                models = http.post("/v1/versions").json()["models"]
                return models[0]["version"] == v2.version

            _wait_for(serving_v2, 60, f"version {v2.version} to be served")
            swap_lag = time.monotonic() - promoted_at
            _wait_for(lambda: loop.versions[v2.version] >= 20, 30, "requests answered by v2")

            # a broken version: refused, reported, and the old one keeps serving
            broken = _register_broken_version(name)
            mlflow.MlflowClient().set_registered_model_alias(name, "champion", broken)

            def reported():
                m = http.post("/v1/versions").json()["models"][0]
                return m if m["last_error_version"] == broken else None

            status = _wait_for(reported, 60, "the failed load to be reported")
            assert status["version"] == v2.version and "still serving" in status["last_error"]
            n_before = loop.versions[v2.version]
            _wait_for(lambda: loop.versions[v2.version] > n_before + 20, 30, "more v2 answers")

        assert loop.errors == [] and set(loop.statuses) == {200}, (loop.errors[:5], loop.statuses)
        assert loop.versions[v1.version] > 0 and loop.versions[v2.version] > 0
        # "within the poll interval": the swap lag is the poll interval plus the load time
        assert swap_lag < POLL_S + 45, swap_lag
        served_ids = set(loop.ok_ids) | {first["prediction_id"]}
    finally:
        stop_serving(server)  # SIGTERM: BentoML runs the shutdown hook, which flushes the log

    logged_ids = set(store.predictions_frame(name)["prediction_id"])
    assert served_ids <= logged_ids, f"{len(served_ids - logged_ids)} predictions lost"
    assert forecast_id in set(store.predictions_frame(forecast_v1.name)["prediction_id"])
    store.dispose()
    keys.dispose()
