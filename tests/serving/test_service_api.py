"""The BentoML service in process (its ASGI app) over a generated set of task declarations
(SHELFWISE_TASKS_DIR): the shipped delay-risk and demand-forecast tasks pointed at the session's
models, plus a classification and a regression task on a CSV no code names. Typed routes per task
generated from each spec (OpenAPI with examples), 4xx naming the field, legacy routes, explain
(TreeSHAP / linear contributions add up to the model's margin), auth, feedback joined to the
logged prediction, the demand forecast (intervals, inventory advice, gate metrics, logged), 503
naming the model when a champion is missing, and a schemathesis fuzz of the OpenAPI (no 5xx)."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import schemathesis

from shelfwise.monitoring.store import PredictionStore
from tests.serving.conftest import fuzz_operation, served_client, service_env, write_tasks_dir

pytestmark = pytest.mark.integration

KEY = "test-key-123"
ORDER = {
    "order_id": "SO-1",
    "warehouse_block": "F",
    "shipment_mode": "Ship",
    "customer_care_calls": 4,
    "customer_rating": 3,
    "prior_purchases": 3,
    "gender": "F",
    "product_importance": "medium",
    "cost": 214,
    "discount": 10.0,
    "weight": 1800.0,
}
BASKET = {"customer": "C-1", "channel": "app", "region": "north", "visits": 12, "spend": 80.5}
VALUE = {"id": "V-1", "channel": "store", "visits": 7, "tenure_days": 300}


@pytest.fixture(scope="module")
def served(mlflow_server: str, delay_v1, forecast_v1, generated_tasks, tmp_path_factory):
    """The service's ASGI app, started (lifespan run) against the real MLflow server."""

    folder = tmp_path_factory.mktemp("serving-api")
    tasks = write_tasks_dir(
        folder / "tasks", {"delay_risk": delay_v1.name, "demand_forecast": forecast_v1.name}
    )
    for path in generated_tasks.folder.glob("*.yaml"):
        (tasks / path.name).write_text(path.read_text())
    store_url = f"sqlite:///{folder / 'store.db'}"
    with served_client(service_env(mlflow_server, store_url, tasks, KEY)) as (service, client):
        yield client.app, client, store_url


@pytest.fixture(scope="module")
def client(served):
    return served[1]


@pytest.fixture(scope="module")
def docs(client) -> dict:
    return client.get("/docs.json").json()


def _request_schema(docs: dict, route: str) -> dict:
    schema = docs["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = docs["components"]["schemas"][schema["$ref"].split("/")[-1]]
    return schema


def test_openapi_has_typed_routes_with_examples_per_task(docs, generated_tasks) -> None:
    paths = set(docs["paths"])
    assert {
        "/v1/basket-churn/predict",
        "/v1/basket-churn/batch",
        "/v1/basket-value/predict",
        "/v1/basket-value/batch",
        "/v1/delay-risk/predict",
        "/v1/delay-risk/batch",
        "/v1/demand-forecast/forecast",
        "/v1/delay-risk",  # legacy routes of the shipped declarations
        "/v1/forecast",
    } <= paths
    churn = _request_schema(docs, "/v1/basket-churn/predict")
    fields = {"customer", "channel", "region", "visits", "spend", "explain"}
    assert set(churn["properties"]) == fields
    assert set(churn["required"]) == {"channel", "region", "visits", "spend"}
    assert churn["additionalProperties"] is False
    first = generated_tasks.frame.iloc[0]
    example = churn["example"]
    assert example["customer"] == first["customer"] and example["channel"] == first["channel"]
    assert example["spend"] == pytest.approx(first["spend"])
    value = _request_schema(docs, "/v1/basket-value/predict")
    assert set(value["properties"]) == {"id", "channel", "visits", "tenure_days", "explain"}
    delay = _request_schema(docs, "/v1/delay-risk/predict")
    assert {"order_id", "warehouse_block", "weight"} <= set(delay["properties"])
    batch = _request_schema(docs, "/v1/delay-risk/batch")
    assert batch["required"] == ["orders"]


def test_classification_predicts_logs_and_takes_feedback(client, served, generated_tasks) -> None:
    r = client.post("/v1/basket-churn/predict", json=BASKET)
    assert r.status_code == 200, r.text
    body = r.json()
    clf = generated_tasks.classifier
    expected = clf.pipeline.predict_proba(pd.DataFrame([BASKET]).drop(columns="customer"))[0, 1]
    assert body["churn_probability"] == pytest.approx(expected, abs=1e-6)
    assert body["task"] == "basket_churn" and body["model_version"] == clf.version
    assert body["customer"] == "C-1" and body["severity"] in {"critical", "warning", "info", "none"}
    assert body["contributions"] is None  # only on request
    fb = client.post(
        "/v1/feedback",
        json={"prediction_id": body["prediction_id"], "actual": 1},
        headers={"X-API-Key": KEY},
    )
    assert fb.status_code == 200 and fb.json()["status"] == "stored", fb.text
    frame = PredictionStore(served[2]).predictions_frame(clf.name)
    logged = frame.set_index("prediction_id").loc[body["prediction_id"]]
    assert logged["actual"] == 1.0 and logged["order_id"] == "C-1"
    assert logged["visits"] == 12 and logged["channel"] == "app"
    assert logged["churn_probability"] == pytest.approx(body["churn_probability"])


def test_regression_predicts_and_batches(client, generated_tasks) -> None:
    reg = generated_tasks.regressor
    r = client.post("/v1/basket-value/predict", json=VALUE)
    assert r.status_code == 200, r.text
    body = r.json()
    row = pd.DataFrame([VALUE]).drop(columns="id")
    assert body["prediction"] == pytest.approx(reg.pipeline.predict(row)[0], rel=1e-9)
    assert "severity" not in body or body["severity"] is None
    rows = [{**VALUE, "id": f"V-{i}", "visits": i} for i in range(4)]
    out = client.post("/v1/basket-value/batch", json={"rows": rows})
    assert out.status_code == 200, out.text
    expected = reg.pipeline.predict(pd.DataFrame(rows).drop(columns="id"))
    assert [o["prediction"] for o in out.json()] == pytest.approx(list(expected), rel=1e-9)
    assert [o["id"] for o in out.json()] == [f"V-{i}" for i in range(4)]
    # missing values are allowed where the task keeps them (data.missing: keep)
    nulls = client.post("/v1/basket-value/predict", json={**VALUE, "tenure_days": None})
    assert nulls.status_code == 200, nulls.text


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v1/basket-churn/predict", {**BASKET, "visits": "many"}, "visits"),
        ("/v1/basket-churn/predict", {**BASKET, "channel": 3}, "channel"),
        ("/v1/basket-churn/predict", {k: v for k, v in BASKET.items() if k != "spend"}, "spend"),
        ("/v1/basket-churn/predict", {**BASKET, "coupon": "X"}, "coupon"),
        ("/v1/basket-churn/predict", {**BASKET, "spend": None}, "spend"),  # missing: error
        ("/v1/basket-value/predict", {**VALUE, "tenure_days": "long"}, "tenure_days"),
        ("/v1/basket-value/predict", {**VALUE, "region": "north"}, "region"),  # not its feature
        ("/v1/delay-risk", {**ORDER, "customer_rating": "three"}, "customer_rating"),
        ("/v1/delay-risk", {k: v for k, v in ORDER.items() if k != "cost"}, "cost"),
        ("/v1/delay-risk", {**ORDER, "gift_wrap": True}, "gift_wrap"),
        ("/v1/delay-risk/predict", {**ORDER, "weight": "heavy"}, "weight"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client, route: str, body: dict, field: str) -> None:
    r = client.post(route, json=body)
    assert r.status_code == 400, r.text
    locs = [d["loc"] for d in r.json()["detail"]]
    assert all(loc[-1] == field for loc in locs), locs
    assert field in r.text


def test_legacy_routes_answer_like_the_new_ones(client, delay_v1) -> None:
    old = client.post("/v1/delay-risk", json=ORDER)
    new = client.post("/v1/delay-risk/predict", json=ORDER)
    assert old.status_code == new.status_code == 200, (old.text, new.text)
    a, b = old.json(), new.json()
    assert a["delay_probability"] == pytest.approx(b["delay_probability"], abs=1e-12)
    assert a["order_id"] == "SO-1" and a["model_version"] == delay_v1.version
    assert set(a) == set(b) and a["severity"] == b["severity"]
    row = pd.DataFrame(
        [
            {
                "Warehouse_block": "F",
                "Mode_of_Shipment": "Ship",
                "Product_importance": "medium",
                "Gender": "F",
                "Customer_care_calls": 4,
                "Customer_rating": 3,
                "Cost_of_the_Product": 214.0,
                "Prior_purchases": 3,
                "Discount_offered": 10.0,
                "Weight_in_gms": 1800.0,
            }
        ]
    )
    expected = delay_v1.pipeline.predict_proba(row)[0, 1]
    assert a["delay_probability"] == pytest.approx(expected, abs=1e-6)
    p = a["delay_probability"]
    band = "critical" if p > 0.7 else "warning" if p > 0.5 else "info" if p > 0.3 else "none"
    assert a["severity"] == band


def test_batch_endpoint_matches_single(client) -> None:
    orders = [{**ORDER, "order_id": f"B-{i}", "weight": 1000.0 + 400 * i} for i in range(5)]
    r = client.post("/v1/delay-risk/batch", json={"orders": orders})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [o["order_id"] for o in out] == [o["order_id"] for o in orders]
    assert len({o["prediction_id"] for o in out}) == 5
    single = client.post("/v1/delay-risk", json=orders[3]).json()
    assert abs(single["delay_probability"] - out[3]["delay_probability"]) < 1e-9


def test_explain_xgboost_contributions_add_up_to_the_margin(client, generated_tasks) -> None:
    r = client.post("/v1/basket-churn/predict", json={**BASKET, "explain": True})
    assert r.status_code == 200, r.text
    body = r.json()
    info = body["explanation"]
    assert info["method"] == "xgboost_treeshap" and info["units"] == "log-odds"
    features = {c["feature"] for c in body["contributions"]}
    assert features <= {"channel", "region", "visits", "spend"} and len(features) == 4
    total = info["base_value"] + sum(c["contribution"] for c in body["contributions"])
    p = body["churn_probability"]
    assert total == pytest.approx(math.log(p / (1 - p)), abs=1e-4)
    sizes = [abs(c["contribution"]) for c in body["contributions"]]
    assert sizes == sorted(sizes, reverse=True)


def test_explain_linear_contributions_add_up_to_the_prediction(client) -> None:
    r = client.post("/v1/basket-value/predict", json={**VALUE, "explain": True})
    assert r.status_code == 200, r.text
    body = r.json()
    info = body["explanation"]
    assert info["method"] == "linear_coefficient_x_value"
    total = info["base_value"] + sum(c["contribution"] for c in body["contributions"])
    assert total == pytest.approx(body["prediction"], rel=1e-9)


def test_malformed_bodies_are_4xx(client) -> None:
    json_type = {"content-type": "application/json"}
    r = client.post("/v1/delay-risk", content=b"{oops", headers=json_type)
    assert r.status_code == 400
    r = client.post("/v1/delay-risk/batch", json={"orders": []})
    assert r.status_code == 400
    r = client.post("/v1/delay-risk/batch", json={"orders": [{**ORDER, "gender": 5}]})
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
    model = {m["task"]: m for m in r.json()["models"]}["delay_risk"]
    assert model["version"] == delay_v1.version and model["swaps"] == 2


def test_versions_and_readiness(client, delay_v1, generated_tasks) -> None:
    r = client.post("/v1/versions")
    assert r.status_code == 200
    body = r.json()
    models = {m["task"]: m for m in body["models"]}
    assert set(models) == {"basket_churn", "basket_value", "delay_risk", "demand_forecast"}
    model, forecast = models["delay_risk"], models["demand_forecast"]
    assert model["registered_name"] == delay_v1.name and model["version"] == delay_v1.version
    assert model["alias_points_to"] == delay_v1.version and model["last_error"] is None
    assert model["path"].startswith("fast path") and model["serving_since"]
    assert model["routes"] == ["/v1/delay-risk/predict", "/v1/delay-risk", "/v1/delay-risk/batch"]
    assert models["basket_value"]["kind"] == "regression"
    assert models["basket_value"]["version"] == generated_tasks.regressor.version
    assert forecast["version"] is not None
    assert forecast["path"].startswith("precomputed window: 3 series x 28 periods")
    assert body["prediction_log"]["enabled"] is True
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_fuzz_openapi_no_5xx(served) -> None:
    """Every operation of the service's own OpenAPI document (every task's routes), valid and
    invalid bodies (bounded examples, valid API key): no 5xx."""
    client = served[1]
    schema = schemathesis.openapi.from_dict(client.get("/docs.json").json())
    seen: dict[str, set[int]] = {}
    # /metrics needs the Prometheus set-up of `bentoml serve`: tested in the subprocess test
    operations = [op.ok() for op in schema.get_all_operations() if op.ok().path != "/metrics"]
    assert {op.path for op in operations} >= {
        "/v1/delay-risk",
        "/v1/delay-risk/batch",
        "/v1/forecast",
        "/v1/basket-churn/predict",
        "/v1/basket-value/batch",
    }
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        answers = fuzz_operation(client, operation, KEY, max_examples=30)
        seen.setdefault(label, set()).update(status for status, _ in answers)
    # the fuzz reached the model (2xx) and the validation (4xx), not only one of them
    for route in ("/v1/delay-risk", "/v1/basket-churn/predict", "/v1/basket-value/predict"):
        assert {200, 400} <= seen[f"POST {route}"], seen
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
    """No champion exists (the live service is pointed at absent model names: a second ASGI app
    in this process would register BentoML's Prometheus metrics twice): each prediction endpoint
    answers 503 naming its model and alias, and /v1/versions reports them not loaded."""
    import bentoml

    from shelfwise.registry.load import registry_client, resolve_alias
    from shelfwise.serving.follow import AliasFollower

    service = bentoml.get_current_service()
    registry = registry_client(mlflow_server)
    absent = {}
    for task in service.followers:
        name = f"no_such_{task}"
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
    monkeypatch.setattr(service, "followers", absent)

    r = client.post("/v1/forecast", json=FORECAST)
    assert r.status_code == 503 and "no_such_demand_forecast@champion does not exist" in r.text
    assert r.headers["retry-after"]
    r = client.post("/v1/delay-risk", json=ORDER)
    assert r.status_code == 503 and "no_such_delay_risk@champion" in r.text, r.text
    r = client.post("/v1/delay-risk/batch", json={"orders": [ORDER]})
    assert r.status_code == 503 and "no_such_delay_risk@champion" in r.text, r.text
    assert r.headers["retry-after"]
    r = client.post("/v1/basket-value/batch", json={"rows": [VALUE]})
    assert r.status_code == 503 and "no_such_basket_value@champion" in r.text, r.text
    models = client.post("/v1/versions").json()["models"]
    assert {(m["task"], m["version"], m["last_error"]) for m in models} == {
        (task, None, None) for task in absent
    }
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_forecast_task_route_answers_like_the_legacy_route(client) -> None:
    old = client.post("/v1/forecast", json=FORECAST)
    new = client.post("/v1/demand-forecast/forecast", json=FORECAST)
    assert old.status_code == new.status_code == 200, new.text
    assert old.json()["forecast"] == new.json()["forecast"]
    assert new.json()["task"] == "demand_forecast"
