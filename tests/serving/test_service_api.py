"""The BentoML service in process (its ASGI app): typed APIs, 4xx naming the field, auth,
feedback joined to the logged prediction, the demand forecast (intervals, inventory advice, gate
metrics, logged), 503 naming the model when a champion is missing, and a schemathesis fuzz of its
OpenAPI (no 5xx)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from shelfwise.monitoring.store import PredictionStore
from shelfwise.serving.schemas import EXAMPLE_ORDER

pytestmark = pytest.mark.integration

KEY = "test-key-123"
ORDER = {**EXAMPLE_ORDER, "order_id": "SO-1", "cost": 214, "weight": 1800.0}


@pytest.fixture(scope="module")
def served(mlflow_server: str, delay_v1, forecast_v1, tmp_path_factory):
    """The service's ASGI app, started (lifespan run) against the real MLflow server."""
    from starlette.testclient import TestClient

    from shelfwise.serving.service import ShelfwiseService

    store_url = f"sqlite:///{tmp_path_factory.mktemp('serving-api') / 'store.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHELFWISE_TRACKING_URI", mlflow_server)
        mp.setenv("SHELFWISE_STORE_URL", store_url)
        mp.setenv("SHELFWISE_API_KEY", KEY)
        mp.setenv("SHELFWISE_DELAY_MODEL_NAME", delay_v1.name)
        mp.setenv("SHELFWISE_FORECAST_MODEL_NAME", forecast_v1.name)
        mp.setenv("SHELFWISE_POLL_INTERVAL_S", "3600")
        app = ShelfwiseService.to_asgi()
        with TestClient(app, raise_server_exceptions=False) as client:
            yield app, client, store_url


@pytest.fixture(scope="module")
def client(served):
    return served[1]


def test_predict_one_logs_and_takes_feedback(client, served, delay_v1, shipping_frame) -> None:
    r = client.post("/v1/delay-risk", json={**ORDER, "gift_wrap": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == delay_v1.version and body["order_id"] == "SO-1"
    df, spec = shipping_frame
    import pandas as pd

    row = pd.DataFrame(
        [
            {
                c: v
                for c, v in zip(
                    spec.features,
                    ["F", "Ship", "medium", "F", 4, 3, 214.0, 3, 10.0, 1800.0],
                    strict=True,
                )
            }
        ]
    )
    expected = delay_v1.pipeline.predict_proba(row[spec.features])[0, 1]
    assert abs(body["delay_probability"] - expected) < 1e-6
    p = body["delay_probability"]
    expected_severity = (
        "critical" if p > 0.7 else "warning" if p > 0.5 else "info" if p > 0.3 else "none"
    )
    assert body["severity"] == expected_severity

    # feedback right away: the row may still be queued, the service flushes it first
    fb = client.post(
        "/v1/feedback",
        json={"prediction_id": body["prediction_id"], "actual": 1},
        headers={"X-API-Key": KEY},
    )
    assert fb.status_code == 200, fb.text
    assert fb.json()["status"] == "stored"
    again = client.post(
        "/v1/feedback",
        json={"prediction_id": body["prediction_id"], "actual": 1},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert again.json()["status"] == "unchanged"

    frame = PredictionStore(served[2]).predictions_frame(delay_v1.name)
    logged = frame.set_index("prediction_id").loc[body["prediction_id"]]
    assert logged["actual"] == 1.0 and logged["gift_wrap"] == True  # noqa: E712
    assert logged["Weight_in_gms"] == 1800.0 and logged["carrier"] == "DHL"
    assert abs(logged["delay_probability"] - p) < 1e-12 and logged["severity"] == body["severity"]
    assert logged["model_version"] == delay_v1.version and logged["order_id"] == "SO-1"


def test_batch_endpoint_matches_single(client) -> None:
    orders = [{**ORDER, "order_id": f"B-{i}", "weight": 1000.0 + 400 * i} for i in range(5)]
    r = client.post("/v1/delay-risk/batch", json={"orders": orders})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [o["order_id"] for o in out] == [o["order_id"] for o in orders]
    assert len({o["prediction_id"] for o in out}) == 5
    single = client.post("/v1/delay-risk", json=orders[3]).json()
    assert abs(single["delay_probability"] - out[3]["delay_probability"]) < 1e-9


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**ORDER, "weight": -1.0}, "weight"),
        ({**ORDER, "warehouse_block": "Z"}, "warehouse_block"),
        ({**ORDER, "shipment_mode": "Rail"}, "shipment_mode"),
        ({k: v for k, v in ORDER.items() if k != "cost"}, "cost"),
        ({**ORDER, "customer_rating": "three"}, "customer_rating"),
        ({**ORDER, "prior_purchases": 1.5}, "prior_purchases"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client, body: dict, field: str) -> None:
    r = client.post("/v1/delay-risk", json=body)
    assert r.status_code == 400, r.text
    locs = [d["loc"] for d in r.json()["detail"]]
    assert locs == [[field]]


def test_malformed_bodies_are_4xx(client) -> None:
    json_type = {"content-type": "application/json"}
    r = client.post("/v1/delay-risk", content=b"{oops", headers=json_type)
    assert r.status_code == 400
    r = client.post("/v1/delay-risk/batch", json={"orders": []})
    assert r.status_code == 400
    r = client.post("/v1/delay-risk/batch", json={"orders": [{**ORDER, "gender": "Q"}]})
    assert r.status_code == 400 and "gender" in r.text
    r = client.post("/v1/delay-risk/batch", content=b"\x00", headers=json_type)
    assert r.status_code == 400  # found by the negative fuzz: BentoML's list body gave 500


def test_auth_on_feedback_and_admin(client, delay_v1) -> None:
    assert client.post("/v1/feedback", json={"order_id": "SO-1", "actual": 0}).status_code == 401
    bad = client.post(
        "/v1/feedback", json={"order_id": "SO-1", "actual": 0}, headers={"X-API-Key": "wrong"}
    )
    assert bad.status_code == 401
    assert client.post("/v1/admin/reload").status_code == 401
    unknown = client.post(
        "/v1/feedback", json={"prediction_id": "nope", "actual": 0}, headers={"X-API-Key": KEY}
    )
    assert unknown.status_code == 404 and "nope" in unknown.text
    r = client.post("/v1/admin/reload", headers={"X-API-Key": KEY})
    assert r.status_code == 200
    model = r.json()["models"][0]
    assert model["version"] == delay_v1.version and model["swaps"] == 2


def test_versions_and_readiness(client, delay_v1) -> None:
    r = client.post("/v1/versions")
    assert r.status_code == 200
    body = r.json()
    model, forecast = body["models"]
    assert model["registered_name"] == delay_v1.name and model["version"] == delay_v1.version
    assert model["alias_points_to"] == delay_v1.version and model["last_error"] is None
    assert model["path"].startswith("fast path") and model["serving_since"]
    assert forecast["task"] == "demand_forecast" and forecast["version"] is not None
    assert forecast["path"].startswith("precomputed window: 3 series x 28 periods")
    assert body["prediction_log"]["enabled"] is True
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").status_code == 200


def _fuzz_operation(client, operation, seen: dict[str, set[int]]) -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    label = f"{operation.method.upper()} {operation.path}"
    strategy = operation.as_strategy(schemathesis.GenerationMode.POSITIVE)
    if operation.method.lower() == "post":  # and bodies that break the schema on purpose
        strategy = st.one_of(strategy, operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))

    @given(case=strategy)
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case) -> None:
        kw = case.as_transport_kwargs(base_url="http://testserver")
        headers = {**(kw.get("headers") or {}), "X-API-Key": KEY}
        body = {}
        if "json" in kw:
            body["json"] = kw["json"]
        elif kw.get("data") is not None:
            body["content"] = kw["data"]
        r = client.request(
            kw["method"], kw["url"], headers=headers, params=kw.get("params"), **body
        )
        seen.setdefault(label, set()).add(r.status_code)
        assert r.status_code < 500, f"{label} {body}: {r.status_code} {r.text}"

    run()


def test_fuzz_openapi_no_5xx(served) -> None:
    """Every operation of the service's own OpenAPI document, valid and invalid bodies (bounded
    examples, valid API key): no 5xx."""
    client = served[1]
    schema = schemathesis.openapi.from_dict(client.get("/docs.json").json())
    seen: dict[str, set[int]] = {}
    # /metrics needs the Prometheus set-up of `bentoml serve`: tested in the subprocess test
    operations = [op.ok() for op in schema.get_all_operations() if op.ok().path != "/metrics"]
    assert {op.path for op in operations} >= {
        "/v1/delay-risk",
        "/v1/delay-risk/batch",
        "/v1/forecast",
    }
    for operation in operations:
        _fuzz_operation(client, operation, seen)
    # the fuzz reached the model (2xx) and the validation (4xx), not only one of them
    assert 200 in seen["POST /v1/delay-risk"] and 400 in seen["POST /v1/delay-risk"], seen
    assert {400, 422} <= seen["POST /v1/forecast"], seen  # schema errors and model checks


# -- demand forecast -----------------------------------------------------------------------------

FORECAST = {"series": {"store": 1, "item": 2}, "horizon": 28}


def _expected(forecast_v1, store: int, item: int, periods: int) -> pd.DataFrame:
    """The fitted model's own forecast of the series' first ``periods`` window dates."""
    request = forecast_v1.model.future_request(periods)
    request = request[(request["store"] == store) & (request["item"] == item)]
    return forecast_v1.model.predict(request).reset_index(drop=True)


def test_forecast_dates_intervals_version_and_gate_metrics(client, forecast_v1) -> None:
    r = client.post("/v1/forecast", json=FORECAST)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == forecast_v1.name and body["model_version"] == forecast_v1.version
    assert body["series"] == {"store": 1, "item": 2} and body["horizon"] == 28
    assert body["gate_metrics"] == pytest.approx(forecast_v1.metrics)
    assert body["frequency"] == "D" and body["interval_level"] == pytest.approx(0.9)
    assert body["inventory"] is None and len(body["prediction_id"]) == 32
    points = pd.DataFrame(body["forecast"])
    assert len(points) == 28
    dates = pd.to_datetime(points["date"])
    assert dates.iloc[0] == pd.Timestamp("2018-01-01")  # the day after the training data
    assert (dates.diff().dropna() == pd.Timedelta(days=1)).all()
    assert (points["yhat_lower"] <= points["yhat"]).all()
    assert (points["yhat"] <= points["yhat_upper"]).all()
    expected = _expected(forecast_v1, 1, 2, 28)
    np.testing.assert_allclose(points["yhat"], expected["yhat"], rtol=1e-12)
    np.testing.assert_allclose(points["yhat_upper"], expected["yhat_upper"], rtol=1e-12)
    short = client.post("/v1/forecast", json={**FORECAST, "horizon": 1}).json()
    assert short["forecast"] == body["forecast"][:1]


@pytest.mark.parametrize(("horizon", "lead_time"), [(28, 7), (3, 10)])
def test_forecast_inventory_matches_models_inventory(
    client, forecast_v1, horizon: int, lead_time: int
) -> None:
    from shelfwise.models.inventory import plan, sd_from_interval

    req = {**FORECAST, "horizon": horizon, "on_hand": 150.0, "lead_time": lead_time}
    r = client.post("/v1/forecast", json={**req, "service_level": 0.95})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["forecast"]) == horizon  # a longer lead time is forecast, not shown
    exp = _expected(forecast_v1, 1, 2, max(horizon, lead_time))
    sd = sd_from_interval(exp["yhat_lower"], exp["yhat_upper"], 0.9)
    p = plan(exp["yhat"].to_numpy(), sd, lead_time, 0.95, on_hand=150.0)
    inv = body["inventory"]
    for field in ("safety_stock", "reorder_point", "stockout_probability", "lead_time_demand_sd"):
        assert inv[field] == pytest.approx(getattr(p, field), rel=1e-9), field
    assert inv["lead_time"] == lead_time and inv["on_hand"] == 150.0

    # without on_hand: safety stock and reorder point, no stockout probability
    no_stock = {k: v for k, v in req.items() if k != "on_hand"}
    inv2 = client.post("/v1/forecast", json={**no_stock, "service_level": 0.95}).json()["inventory"]
    assert inv2["stockout_probability"] is None
    assert inv2["reorder_point"] == pytest.approx(p.reorder_point, rel=1e-9)


@pytest.mark.parametrize(
    ("body", "status", "loc", "words"),
    [
        ({**FORECAST, "horizon": 29}, 422, ["horizon"], "horizon 28"),
        ({**FORECAST, "lead_time": 29, "service_level": 0.9}, 422, ["lead_time"], "horizon 28"),
        ({**FORECAST, "series": {"store": 1}}, 422, ["series", "item"], "'item'"),
        ({**FORECAST, "series": {"store": 1, "item": 2, "shop": 3}}, 422, ["series", "shop"], ""),
        ({**FORECAST, "series": {"store": "1", "item": 2}}, 422, ["series", "store"], "integer"),
        ({**FORECAST, "series": {"store": 99, "item": 2}}, 404, ["series"], "store=99, item=2"),
        ({**FORECAST, "lead_time": 7}, 422, ["service_level"], "service_level"),
        ({**FORECAST, "on_hand": 5.0}, 422, ["lead_time"], "lead_time"),
        ({**FORECAST, "lead_time": 7, "service_level": 0.9999}, 400, ["service_level"], ""),
        ({**FORECAST, "lead_time": 7, "service_level": 0.3}, 400, ["service_level"], ""),
        ({**FORECAST, "horizon": 0}, 400, ["horizon"], ""),
        ({"series": {"store": 1, "item": 2}}, 400, ["horizon"], ""),
        ({**FORECAST, "on_hand": -1.0, "lead_time": 7, "service_level": 0.9}, 400, ["on_hand"], ""),
    ],
)
def test_forecast_bad_input_names_the_field(
    client, body: dict, status: int, loc: list, words: str
) -> None:
    r = client.post("/v1/forecast", json=body)
    assert r.status_code == status, r.text
    out = r.json()
    assert [d["loc"][: len(loc)] for d in out["detail"]] == [loc], out
    assert words in r.text


def test_forecast_is_logged(client, served, forecast_v1) -> None:
    body = {**FORECAST, "horizon": 5, "on_hand": 80.0, "lead_time": 7, "service_level": 0.9}
    r = client.post("/v1/forecast", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    store = PredictionStore(served[2])
    try:
        deadline = time.monotonic() + 30  # written off the request path, within flush_interval
        frame = store.predictions_frame(forecast_v1.name)
        while answer["prediction_id"] not in set(frame["prediction_id"]):
            assert time.monotonic() < deadline, "forecast prediction never reached the log"
            time.sleep(0.1)
            frame = store.predictions_frame(forecast_v1.name)
    finally:
        store.dispose()
    row = frame.set_index("prediction_id").loc[answer["prediction_id"]]
    assert row["model_name"] == forecast_v1.name and row["model_version"] == forecast_v1.version
    assert (row["store"], row["item"], row["horizon"], row["lead_time"]) == (1, 2, 5, 7)
    total = sum(p["yhat"] for p in answer["forecast"])
    assert row["yhat_sum"] == pytest.approx(total)
    assert row["reorder_point"] == pytest.approx(answer["inventory"]["reorder_point"])
    assert row["first_date"] == "2018-01-01" and row["last_date"] == "2018-01-05"


def test_no_champion_is_a_503_naming_the_model(client, mlflow_server: str, monkeypatch) -> None:
    """Neither champion exists (the live service is pointed at two absent model names: a second
    ASGI app in this process would register BentoML's Prometheus metrics twice): each prediction
    endpoint answers 503 naming its model and alias, and /v1/versions reports both not loaded."""
    import bentoml

    from shelfwise.registry.load import registry_client, resolve_alias
    from shelfwise.serving.follow import AliasFollower

    service = bentoml.get_current_service()
    registry = registry_client(mlflow_server)
    absent = {}
    for task, name in (("delay_risk", "no_such_delay_model"), ("demand_forecast", "no_such_fc")):
        follower = AliasFollower(
            task=task,
            registered_name=name,
            alias="champion",
            resolve=lambda name=name: resolve_alias(registry, name, "champion"),
            load=lambda version: pytest.fail("nothing to load"),
            poll_interval_s=3600,
        )
        follower.check()
        absent[task] = follower
    monkeypatch.setattr(service, "delay", absent["delay_risk"])
    monkeypatch.setattr(service, "forecaster", absent["demand_forecast"])
    monkeypatch.setattr(service, "followers", absent)

    r = client.post("/v1/forecast", json=FORECAST)
    assert r.status_code == 503 and "no_such_fc@champion does not exist" in r.text, r.text
    assert r.headers["retry-after"]
    r = client.post("/v1/delay-risk", json=ORDER)
    assert r.status_code == 503 and "no_such_delay_model@champion" in r.text, r.text
    r = client.post("/v1/delay-risk/batch", json={"orders": [ORDER]})
    assert r.status_code == 503 and "no_such_delay_model@champion" in r.text, r.text
    assert r.headers["retry-after"]
    models = client.post("/v1/versions").json()["models"]
    assert [(m["task"], m["version"], m["last_error"]) for m in models] == [
        ("delay_risk", None, None),
        ("demand_forecast", None, None),
    ]
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
