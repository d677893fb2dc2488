"""Tenants through the service in process (its ASGI app, the session's real MLflow server): three
tenants own the served tasks (``default``: delay risk; ``bakery``: the demand forecast and basket
value; ``grocer``: basket churn), each with keys in the store.

The cross-tenant matrix: every grocer key (each scope, and all three) against every bakery
resource (prediction routes, legacy route, feedback by prediction id and by order id) answers 401
(the key lacks the route's scope) or 404 (the route is another tenant's), with no bakery data
in the body and nothing written to the store. Missing, malformed, unknown, revoked and
wrong-scope keys are 401; the shared SHELFWISE_API_KEY is a default-tenant key; /v1/versions and
reload show a key its own tenant's tasks only; a flooding key gets 429 while others are served."""

from __future__ import annotations

import math

import pytest
import yaml

from shelfwise.monitoring.store import PredictionStore
from shelfwise.serving.keys import KeyStore
from tests.serving.conftest import fuzz_operation, served_client, service_env, write_tasks_dir

pytestmark = pytest.mark.integration

SHARED_KEY = "tenants-shared-key"
BURST = 30
VALUE = {"id": "V-7", "channel": "store", "visits": 7, "tenure_days": 300}
BASKET = {"customer": "C-9", "channel": "app", "region": "north", "visits": 12, "spend": 80.5}
FORECAST = {"series": {"store": 1, "item": 2}, "horizon": 7}
FORECAST_ROW = {"store": 1, "item": 2, "date": "2018-01-01"}  # a demand-forecast actual
ORDER = {
    "order_id": "T-1",
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
TENANTS = {
    "tenants": [
        {"id": "default", "display_name": "Shelfwise", "tasks": "*"},
        {"id": "bakery", "display_name": "Bakery", "tasks": ["demand_forecast", "basket_value"]},
        {"id": "grocer", "display_name": "Grocer", "tasks": ["basket_churn"]},
    ]
}
SCOPE_SETS = {
    "predict": ["predict"],
    "feedback": ["feedback"],
    "admin": ["admin"],
    "all": ["predict", "feedback", "admin"],
}


@pytest.fixture(scope="module")
def tenants_app(mlflow_server: str, delay_v1, forecast_v1, generated_tasks, tmp_path_factory):

    folder = tmp_path_factory.mktemp("tenants-api")
    tasks = write_tasks_dir(
        folder / "tasks", {"delay_risk": delay_v1.name, "demand_forecast": forecast_v1.name}
    )
    for path in generated_tasks.folder.glob("*.yaml"):
        (tasks / path.name).write_text(path.read_text())
    tenants_file = folder / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(TENANTS))
    # another tenant's than default's task is served from <tenant>.<model> (its own registry
    # name): copy the session's versions there
    owned = {
        "bakery": [forecast_v1.name, generated_tasks.regressor.name],
        "grocer": [generated_tasks.classifier.name],
    }
    names = {t: [_copy_version(mlflow_server, t, n) for n in ns] for t, ns in owned.items()}
    names["default"] = [delay_v1.name]
    store_url = f"sqlite:///{folder / 'store.db'}"
    keys = KeyStore(store_url)
    made = {
        (tenant, label): keys.create(tenant, scopes, f"{tenant}-{label}")
        for tenant in ("bakery", "grocer", "default")
        for label, scopes in SCOPE_SETS.items()
    }
    env = service_env(
        mlflow_server,
        store_url,
        tasks,
        SHARED_KEY,
        SHELFWISE_TENANTS_CONFIG=str(tenants_file),
        SHELFWISE_KEY_CACHE_TTL_S="0",  # every request reads the key row: revocation
        SHELFWISE_RATE_LIMIT_RPS="0.5",
        SHELFWISE_RATE_LIMIT_BURST=str(BURST),
    )
    with served_client(env) as (service, client):
        yield {
            "client": client,
            "service": service,
            "store": PredictionStore(store_url),
            "keys": keys,
            "key": {k: raw for k, (_, raw) in made.items()},
            "names": names,
        }
    keys.dispose()


def _copy_version(tracking_uri: str, tenant: str, name: str) -> str:
    """``<tenant>.<name>@champion``: the champion of ``name`` (same artifacts and tags)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    src = client.get_model_version_by_alias(name, "champion")
    target = f"{tenant}.{name}"
    mv = client.copy_model_version(f"models:/{name}/{src.version}", target)
    for key, value in src.tags.items():
        client.set_model_version_tag(target, mv.version, key, value)
    client.set_registered_model_alias(target, "champion", mv.version)
    return target


def _h(raw: str) -> dict[str, str]:
    return {"X-API-Key": raw}


def _flush(ctx) -> None:
    log = ctx["service"]._current().prediction_log
    assert log is not None and log.flush(timeout=30)


@pytest.fixture(scope="module")
def bakery_prediction(tenants_app) -> dict:
    """One bakery prediction (by a bakery key), written to the store."""
    client = tenants_app["client"]
    r = client.post(
        "/v1/basket-value/predict", json=VALUE, headers=_h(tenants_app["key"]["bakery", "all"])
    )
    assert r.status_code == 200, r.text
    _flush(tenants_app)
    return r.json()


def _bakery_cells(pid: str) -> list[tuple[str, str, dict]]:
    """(label, route, body) of every bakery resource, with the scope each needs."""
    return [
        ("predict", "/v1/basket-value/predict", VALUE),
        ("predict", "/v1/basket-value/batch", {"rows": [VALUE]}),
        ("predict", "/v1/demand-forecast/forecast", FORECAST),
        ("predict", "/v1/forecast", FORECAST),
        ("feedback", "/v1/feedback", {"prediction_id": pid, "actual": 99.0}),
        ("feedback", "/v1/feedback", {"order_id": VALUE["id"], "actual": 98.0}),
        ("feedback", "/v1/demand-forecast/actuals", {"rows": [{**FORECAST_ROW, "sales": 3}]}),
        ("feedback", "/v1/demand-forecast/stock-alerts", {"positions": []}),
    ]


def test_cross_tenant_matrix_is_401_or_404_without_data_or_writes(
    tenants_app, bakery_prediction
) -> None:
    client, store = tenants_app["client"], tenants_app["store"]
    pid = bakery_prediction["prediction_id"]
    before = {
        t: (store.count_predictions(tenant=t), store.count_feedback(tenant=t))
        for t in ("bakery", "grocer", "default")
    }
    prediction = repr(bakery_prediction["prediction"])[:8]  # the bakery's answer
    cells = 0
    for label, scopes in SCOPE_SETS.items():
        raw = tenants_app["key"]["grocer", label]
        for needs, route, body in _bakery_cells(pid):
            r = client.post(route, json=body, headers=_h(raw))
            expected = 404 if needs in scopes else 401
            assert r.status_code == expected, (label, route, r.status_code, r.text)
            # nothing of the bakery's but what the caller sent itself (an id it names)
            hidden = [prediction, *tenants_app["names"]["bakery"]]
            hidden += [] if pid in str(body) else [pid]
            assert not any(s in r.text for s in hidden), (label, route, r.text)
            assert _only_an_error(r.json()), r.text
            cells += 1
    assert cells == len(SCOPE_SETS) * 8
    _flush(tenants_app)
    after = {
        t: (store.count_predictions(tenant=t), store.count_feedback(tenant=t))
        for t in ("bakery", "grocer", "default")
    }
    assert after == before
    frame = store.predictions_frame(bakery_prediction_model(tenants_app), tenant="bakery")
    assert math.isnan(frame.set_index("prediction_id").loc[pid, "actual"])  # no feedback


def _only_an_error(body: object) -> bool:
    """``{"error": ...}`` (the middleware) or ``[{"error": ...}]`` (BentoML's NotFound)."""
    items = body if isinstance(body, list) else [body]
    return all(isinstance(i, dict) and set(i) == {"error"} for i in items)


def bakery_prediction_model(ctx) -> str:
    return ctx["names"]["bakery"][1]  # basket_value's registered model


def test_a_tenants_own_key_is_served_and_its_rows_carry_the_tenant(
    tenants_app, bakery_prediction
) -> None:
    client, store = tenants_app["client"], tenants_app["store"]
    r = client.post(
        "/v1/feedback",
        json={"prediction_id": bakery_prediction["prediction_id"], "actual": 42.0},
        headers=_h(tenants_app["key"]["bakery", "feedback"]),
    )
    assert r.status_code == 200 and r.json()["status"] == "stored", r.text
    frame = store.predictions_frame(bakery_prediction_model(tenants_app), tenant="bakery")
    assert frame.set_index("prediction_id").loc[bakery_prediction["prediction_id"], "actual"] == 42
    assert store.predictions_frame(bakery_prediction_model(tenants_app), tenant="grocer").empty
    r = client.post(
        "/v1/basket-churn/predict", json=BASKET, headers=_h(tenants_app["key"]["grocer", "predict"])
    )
    assert r.status_code == 200, r.text
    _flush(tenants_app)
    grocer = store.predictions_frame(tenants_app["names"]["grocer"][0], tenant="grocer")
    assert r.json()["prediction_id"] in set(grocer["prediction_id"])
    r = client.post(
        "/v1/demand-forecast/forecast",
        json=FORECAST,
        headers=_h(tenants_app["key"]["bakery", "predict"]),
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": "garbage"},
        {"Authorization": "Bearer swk_000000000000_" + "x" * 43},  # well formed, unknown id
        {"Authorization": "Basic Zm9vOmJhcg=="},  # not a key header at all
    ],
    ids=["missing", "empty", "malformed", "unknown", "basic-auth"],
)
def test_missing_malformed_and_unknown_keys_are_401(tenants_app, headers) -> None:
    client = tenants_app["client"]
    for route, body in [
        ("/v1/basket-value/predict", VALUE),
        ("/v1/feedback", {"order_id": "V-7", "actual": 1}),
        ("/v1/admin/reload", None),
    ]:
        r = client.post(route, json=body, headers=headers)
        assert r.status_code == 401, (route, r.text)
        assert "www-authenticate" in r.headers


def test_a_wrong_secret_for_a_real_key_id_is_401(tenants_app) -> None:
    raw = tenants_app["key"]["bakery", "all"]
    forged = raw[: len("swk_") + 13] + ("A" if raw[-1] != "A" else "B") * 43
    r = tenants_app["client"].post("/v1/basket-value/predict", json=VALUE, headers=_h(forged))
    assert r.status_code == 401


def test_wrong_scope_is_401(tenants_app) -> None:
    client, key = tenants_app["client"], tenants_app["key"]
    assert (
        client.post(
            "/v1/basket-value/predict", json=VALUE, headers=_h(key["bakery", "feedback"])
        ).status_code
        == 401
    )
    assert (
        client.post(
            "/v1/feedback",
            json={"order_id": "V-7", "actual": 1},
            headers=_h(key["bakery", "predict"]),
        ).status_code
        == 401
    )
    assert client.post("/v1/admin/reload", headers=_h(key["bakery", "predict"])).status_code == 401


def test_a_revoked_key_stops_working_without_a_restart(tenants_app) -> None:
    client, keys = tenants_app["client"], tenants_app["keys"]
    record, raw = keys.create("bakery", ["predict"], "to-revoke")
    assert client.post("/v1/basket-value/predict", json=VALUE, headers=_h(raw)).status_code == 200
    keys.revoke(record.key_id)
    r = client.post("/v1/basket-value/predict", json=VALUE, headers=_h(raw))
    assert r.status_code == 401, r.text
    new, new_raw = keys.rotate(keys.create("bakery", ["predict"], "to-rotate")[0].key_id)
    assert (
        client.post("/v1/basket-value/predict", json=VALUE, headers=_h(new_raw)).status_code == 200
    )


def test_the_shared_key_is_a_default_tenant_key(tenants_app) -> None:
    client = tenants_app["client"]
    r = client.post("/v1/delay-risk", json=ORDER)  # default tenant's route: open as before
    assert r.status_code == 200, r.text
    fb = client.post(
        "/v1/feedback",
        json={"prediction_id": r.json()["prediction_id"], "actual": 1},
        headers=_h(SHARED_KEY),
    )
    assert fb.status_code == 200, fb.text
    assert (
        client.post("/v1/basket-value/predict", json=VALUE, headers=_h(SHARED_KEY)).status_code
        == 404
    )
    r = client.post("/v1/basket-value/predict", json=VALUE)  # another tenant's: never anonymous
    assert r.status_code == 401


def test_versions_and_reload_show_only_the_keys_tenant(tenants_app) -> None:
    client, key, names = tenants_app["client"], tenants_app["key"], tenants_app["names"]
    for tenant in ("bakery", "grocer"):
        for route in ("/v1/versions", "/v1/admin/reload"):
            r = client.post(route, headers=_h(key[tenant, "admin"]))
            assert r.status_code == 200, r.text
            served = {m["registered_name"] for m in r.json()["models"]}
            assert served == set(names[tenant]), (tenant, route, served)
            others = [n for t, ns in names.items() if t != tenant for n in ns]
            assert not any(n in r.text for n in others)
    anonymous = client.post("/v1/versions").json()
    assert {m["registered_name"] for m in anonymous["models"]} == set(names["default"])


def test_a_flooding_key_gets_429_and_others_are_served(tenants_app) -> None:
    client, keys = tenants_app["client"], tenants_app["keys"]
    _, flood = keys.create("grocer", ["predict"], "flood")
    statuses = [
        client.post("/v1/basket-churn/predict", json=BASKET, headers=_h(flood)).status_code
        for _ in range(BURST + 5)
    ]
    assert statuses[:BURST] == [200] * BURST
    assert 429 in statuses[BURST:]
    r = client.post("/v1/basket-churn/predict", json=BASKET, headers=_h(flood))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    _, calm = keys.create("grocer", ["predict"], "calm")
    assert client.post("/v1/basket-churn/predict", json=BASKET, headers=_h(calm)).status_code == 200
    bakery = tenants_app["key"]["bakery", "predict"]
    assert (
        client.post("/v1/basket-value/predict", json=VALUE, headers=_h(bakery)).status_code == 200
    )


def test_fuzz_with_two_tenants_keys_no_5xx_and_no_other_tenants_ids(tenants_app) -> None:
    """Schemathesis over every operation with a valid key of each tenant (a fresh key per
    operation: the rate limit is not what is tested here): no 5xx, and no answer to one
    tenant carries a prediction id or a model name of the other."""
    import re

    import schemathesis

    client, keys, names = tenants_app["client"], tenants_app["keys"], tenants_app["names"]
    schema = schemathesis.openapi.from_dict(client.get("/docs.json").json())
    operations = [op.ok() for op in schema.get_all_operations() if op.ok().path != "/metrics"]
    seen: dict[str, list[tuple[int, str]]] = {"bakery": [], "grocer": []}
    for tenant in seen:
        for operation in operations:
            _, raw = keys.create(tenant, ["predict", "feedback", "admin"], "fuzz")
            seen[tenant] += fuzz_operation(client, operation, raw, max_examples=8)
    ids = {
        t: set(re.findall(r'"prediction_id":\s*"([0-9a-f]{32})"', " ".join(x for _, x in answers)))
        for t, answers in seen.items()
    }
    assert ids["bakery"] and ids["grocer"]  # both tenants were served, not only refused
    for tenant, other in (("bakery", "grocer"), ("grocer", "bakery")):
        text = " ".join(x for _, x in seen[tenant])
        assert not any(pid in text for pid in ids[other])
        assert not any(name in text for name in names[other])
        assert {200, 404} <= {s for s, _ in seen[tenant]}
