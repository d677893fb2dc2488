"""Swaps pushed by the registry: MLflow's webhook signature, replay and forgery refused, a
verified alias event wakes the followers (in every worker, through the shared signal), and the
service's receiver through ``Service.to_asgi`` against the real MLflow server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from shelfwise.serving.follow import AliasFollower
from shelfwise.serving.push import (
    AliasEvent,
    RegistryEventReceiver,
    Rejected,
    SeenDeliveries,
    WakeSignal,
    parse_event,
    sign,
    signal_path,
    verify,
)
from tests.serving.conftest import served_client, service_env, write_tasks_dir

SECRET = "s3cret-for-tests"
ROUTE = "/v1/registry/events"


def mlflow_delivery(
    payload: dict, secret: str = SECRET, timestamp: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """A delivery exactly as MLflow 3 builds it (mlflow/webhooks/delivery.py), signed by
    MLflow's own function: the anchor the service must agree with."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": payload,
        }
    )
    delivery_id = str(uuid.uuid4())
    ts = str(int(timestamp if timestamp is not None else time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, ts, body),
    }
    return body.encode(), headers


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_signature_is_mlflows_and_verify_accepts_it() -> None:
    body, headers = mlflow_delivery({"name": "m", "alias": "champion", "version": "3"})
    h = _lower(headers)
    assert (
        sign(SECRET, h["x-mlflow-delivery-id"], h["x-mlflow-timestamp"], body)
        == (h["x-mlflow-signature"])
    )
    assert verify(SECRET, h, body, time.time(), 300) == h["x-mlflow-delivery-id"]
    event = parse_event(body, "d1")
    assert event == AliasEvent("created", "m", "champion", "3", "d1")


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "x-mlflow-signature"}), "unsigned"),
        (lambda b, h: (b.replace(b'"3"', b'"4"'), h), "does not match"),
        (lambda b, h: (b, {**h, "x-mlflow-signature": "v1,AAAA"}), "does not match"),
        (lambda b, h: (b, {**h, "x-mlflow-delivery-id": "other"}), "does not match"),
        (lambda b, h: (b, {**h, "x-mlflow-timestamp": "soon"}), "not a Unix time"),
    ],
    ids=["unsigned", "tampered-body", "forged-signature", "swapped-delivery-id", "bad-time"],
)
def test_forged_tampered_or_unsigned_deliveries_are_401(mutate, reason: str) -> None:
    body, headers = mlflow_delivery({"name": "m", "alias": "champion", "version": "3"})
    body, h = mutate(body, _lower(headers))
    with pytest.raises(Rejected) as err:
        verify(SECRET, h, body, time.time(), 300)
    assert err.value.status == 401 and reason in err.value.reason


def test_wrong_secret_and_replay_window() -> None:
    body, headers = mlflow_delivery({"name": "m", "alias": "champion", "version": "3"}, "other")
    with pytest.raises(Rejected, match="does not match"):
        verify(SECRET, _lower(headers), body, time.time(), 300)
    old = time.time() - 3600
    body, headers = mlflow_delivery({"name": "m", "alias": "champion"}, timestamp=old)
    with pytest.raises(Rejected, match="replay window"):
        verify(SECRET, _lower(headers), body, time.time(), 300)
    assert verify(SECRET, _lower(headers), body, old + 10, 300)  # inside the window: accepted


def test_parse_event_kinds_and_malformed_bodies() -> None:
    deleted = json.dumps(
        {"entity": "model_version_alias", "action": "deleted", "data": {"name": "m", "alias": "a"}}
    ).encode()
    assert parse_event(deleted, "d") == AliasEvent("deleted", "m", "a", None, "d")
    other = json.dumps({"entity": "registered_model", "action": "created", "data": {}}).encode()
    assert parse_event(other, "d") is None
    for body, field_name in [
        (b"not json", "JSON"),
        (b"[1]", "object"),
        (b'{"entity": "model_version_alias", "action": "created"}', "data"),
        (b'{"entity": "model_version_alias", "action": "created", "data": {"name": "m"}}', "alias"),
    ]:
        with pytest.raises(Rejected) as err:
            parse_event(body, "d")
        assert err.value.status == 400 and field_name in err.value.reason


def test_seen_deliveries_dedupe_and_stay_bounded() -> None:
    seen = SeenDeliveries(max_age_s=10, capacity=3)
    assert seen.first_time("a", 0) and not seen.first_time("a", 1)
    for i in range(5):
        assert seen.first_time(f"x{i}", 2)
    assert len(seen._seen) <= 3
    assert seen.first_time("a", 100)  # long gone: not remembered forever


@dataclass(frozen=True)
class Fake:
    version: str
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_wake_reaches_the_followers_of_every_worker(tmp_path: Path) -> None:
    """Two followers of one alias, as two worker processes would have, polling hourly: the
    worker that receives the event wakes its own follower and signals the other."""
    alias = {"v": "1"}
    path = signal_path(tmp_path, "delay_risk", "champion")
    workers = [
        AliasFollower(
            "delay_risk",
            "delay_risk",
            "champion",
            lambda: alias["v"],
            Fake,
            poll_interval_s=3600,
            signal=WakeSignal(path),
            signal_tick_s=0.05,
        )
        for _ in range(2)
    ]
    for f in workers:
        f.check()
        f.start()
    try:
        alias["v"] = "2"
        time.sleep(0.3)
        assert [f.current.version for f in workers] == ["1", "1"]  # no poll came: still 1
        workers[0].wake()
        assert _wait(lambda: all(f.current.version == "2" for f in workers))
        assert workers[0].status().wakes == 1 and workers[1].status().wakes == 0
        assert [f.swaps for f in workers] == [2, 2]
    finally:
        for f in workers:
            f.stop()


def _receiver_client(secret: str | None, events: list[AliasEvent]) -> TestClient:
    async def app(scope, receive, send):  # every other route: a plain 200
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    def on_event(event: AliasEvent) -> list[str]:
        events.append(event)
        return [f"{event.name}@{event.alias}"]

    receiver = RegistryEventReceiver(app, ROUTE, lambda: secret, 300, on_event)
    return TestClient(receiver)


def test_receiver_acts_only_on_verified_first_deliveries() -> None:
    events: list[AliasEvent] = []
    client = _receiver_client(SECRET, events)
    body, headers = mlflow_delivery({"name": "m", "alias": "champion", "version": "7"})
    forged = {**headers, "X-MLflow-Signature": sign("guess", "x", "1", body)}
    r = client.post(ROUTE, content=body, headers=forged)
    assert r.status_code == 401 and "does not match" in r.json()["error"] and events == []
    r = client.post(ROUTE, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and "unsigned" in r.json()["error"] and events == []

    r = client.post(ROUTE, content=body, headers=headers)
    assert r.status_code == 200 and r.json()["woken"] == ["m@champion"], r.text
    assert events == [AliasEvent("created", "m", "champion", "7", events[0].delivery_id)]
    r = client.post(ROUTE, content=body, headers=headers)  # a replay of the same delivery
    assert r.status_code == 200 and r.json()["duplicate"] is True and len(events) == 1

    assert client.get(ROUTE).status_code == 405
    assert client.post(ROUTE, content=b"x" * 70_000, headers=headers).status_code == 413
    assert client.get("/v1/other").text == "app"  # other routes pass through untouched
    off = _receiver_client(None, events)
    assert off.post(ROUTE, content=body, headers=headers).status_code == 404


def test_service_swaps_on_a_signed_event_and_ignores_forged_ones(
    mlflow_server: str, register_delay, forecast_v1, tmp_path: Path
) -> None:
    """Through ``Service.to_asgi`` on the real registry, polling hourly: a forged event changes
    nothing; MLflow's signed event for the moved alias swaps at once."""
    import mlflow

    name = f"delay_risk_push_{uuid.uuid4().hex[:8]}"
    v1 = register_delay(name, n_estimators=20, seed=0)
    v2 = register_delay(name, n_estimators=30, seed=1, alias=None)
    tasks = write_tasks_dir(
        tmp_path / "tasks", {"delay_risk": name, "demand_forecast": forecast_v1.name}
    )
    env = service_env(
        mlflow_server,
        f"sqlite:///{tmp_path / 'store.db'}",
        tasks,
        "key",
        SHELFWISE_WEBHOOK_SECRET=SECRET,
        SHELFWISE_HOME=str(tmp_path / "state"),
    )

    def served() -> dict:
        models = {m["task"]: m for m in client.post("/v1/versions").json()["models"]}
        return models["delay_risk"]

    with served_client(env) as (_service, client):
        assert served()["version"] == v1.version
        mlflow.MlflowClient(mlflow_server).set_registered_model_alias(name, "champion", v2.version)
        payload = {"name": name, "alias": "champion", "version": v2.version}
        body, headers = mlflow_delivery(payload, secret="not-the-secret")
        assert client.post(ROUTE, content=body, headers=headers).status_code == 401
        time.sleep(0.5)
        assert served()["version"] == v1.version and served()["wakes"] == 0

        body, headers = mlflow_delivery(payload)
        r = client.post(ROUTE, content=body, headers=headers)
        assert r.status_code == 200 and r.json()["woken"] == [f"{name}@champion"], r.text
        assert _wait(lambda: served()["version"] == v2.version)
        assert served()["wakes"] == 1 and served()["swaps"] == 2
        # an event for a model this service does not serve wakes nothing
        body, headers = mlflow_delivery({"name": "elsewhere", "alias": "champion"})
        assert client.post(ROUTE, content=body, headers=headers).json()["woken"] == []


def test_follower_wake_is_thread_safe_under_many_events(tmp_path: Path) -> None:
    """Events arriving together (MLflow delivers on a thread pool) coalesce into checks; the
    follower ends on the alias's final version."""
    alias = {"v": "1"}
    f = AliasFollower("t", "m", "champion", lambda: alias["v"], Fake, poll_interval_s=3600)
    f.check()
    f.start()
    try:

        def fire(v: str) -> None:
            alias["v"] = v
            f.wake()

        threads = [threading.Thread(target=fire, args=(str(i),)) for i in range(2, 12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert _wait(lambda: f.current.version == alias["v"])
        assert f.status().wakes == 10
    finally:
        f.stop()
