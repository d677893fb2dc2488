"""The store's tenant column on SQLite and the real PostgreSQL: every row carries its tenant,
feedback finds only the same tenant's predictions (another's is unknown, like a missing one),
the reads filter by tenant, a store made before tenants gains the column without losing rows,
and two tenants writing at once each count exactly their own rows."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from shelfwise.monitoring.store import (
    PredictionRecord,
    PredictionStore,
    UnknownPredictionError,
    normalise_url,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = "delay_risk"


def _rec(i: int, tenant: str, order: str | None = None) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=f"{tenant}-{i:05d}",
        created_at=T0 + timedelta(seconds=i),
        model_name=MODEL,
        model_version="1",
        order_id=order or f"o{i}",
        inputs={"x": float(i)},
        outputs={"p": i / 1000},
        tenant=tenant,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_database")


def test_feedback_and_reads_are_confined_to_the_tenant(store_url: str) -> None:
    store = PredictionStore(store_url)
    try:
        store.log_predictions([_rec(i, "bakery", order="shared") for i in range(3)])
        store.log_predictions([_rec(i, "grocer", order="shared") for i in range(2)])
        store.log_predictions([_rec(9, "default")])  # the default tenant, as before tenants
        with pytest.raises(UnknownPredictionError):
            store.record_feedback("bakery-00000", actual=1.0, tenant="grocer")
        with pytest.raises(UnknownPredictionError):
            store.record_feedback("bakery-00000", actual=1.0)  # default tenant
        # the same order id in two tenants: each finds its own latest prediction
        assert store.record_feedback(
            order_id="shared", actual=1.0, tenant="grocer"
        ).prediction_id == ("grocer-00001")
        assert store.record_feedback(
            order_id="shared", actual=0.0, tenant="bakery"
        ).prediction_id == ("bakery-00002")
        assert store.record_feedback("default-00009", actual=1.0).status == "stored"
        assert store.count_feedback("grocer") == 1 and store.count_feedback("bakery") == 1
        assert store.count_feedback() == 3
        assert store.count_predictions(MODEL, tenant="bakery") == 3
        assert store.count_predictions(MODEL, tenant="grocer") == 2
        assert store.count_predictions(MODEL) == 6  # no tenant: all rows (as before)
        grocer = store.predictions_frame(MODEL, tenant="grocer")
        assert list(grocer["prediction_id"]) == ["grocer-00000", "grocer-00001"]
        assert grocer["actual"].tolist()[1] == 1.0
        assert store.feedback_count_since(MODEL, T0, tenant="bakery") == 1
        assert store.feedback_count_since(MODEL, T0, tenant="nobody") == 0
    finally:
        store.dispose()


OLD_SCHEMA = [
    """CREATE TABLE predictions (prediction_id VARCHAR(64) PRIMARY KEY, created_at TIMESTAMP
    NOT NULL, model_name VARCHAR(200) NOT NULL, model_version VARCHAR(64) NOT NULL, order_id
    VARCHAR(200), inputs JSON NOT NULL, outputs JSON NOT NULL)""",
    """CREATE TABLE feedback (prediction_id VARCHAR(64) PRIMARY KEY REFERENCES
    predictions(prediction_id) ON DELETE CASCADE, actual FLOAT NOT NULL, received_at TIMESTAMP
    NOT NULL)""",
    """INSERT INTO predictions VALUES ('old-1', '2025-06-01 10:00:00', 'delay_risk', '3', 'o1',
    '{"x": 1.0}', '{"p": 0.5}')""",
    "INSERT INTO feedback VALUES ('old-1', 1.0, '2025-06-02 10:00:00')",
]


def test_a_store_made_before_tenants_gains_the_column(store_url: str) -> None:
    engine = create_engine(normalise_url(store_url))
    with engine.begin() as conn:
        for sql in OLD_SCHEMA:
            conn.execute(text(sql))
    engine.dispose()
    store = PredictionStore(store_url)
    again = PredictionStore(store_url)  # opening it twice changes nothing
    try:
        columns = {
            t: {c["name"] for c in inspect(store.engine).get_columns(t)}
            for t in ("predictions", "feedback")
        }
        assert "tenant" in columns["predictions"] and "tenant" in columns["feedback"]
        old = store.predictions_frame(MODEL, tenant="default")
        assert list(old["prediction_id"]) == ["old-1"] and old["actual"].tolist() == [1.0]
        assert store.count_feedback("default") == 1
        store.log_predictions([_rec(1, "bakery")])
        assert store.count_predictions(MODEL, tenant="bakery") == 1
        assert store.record_feedback(order_id="o1", actual=0.0).prediction_id == "old-1"
    finally:
        store.dispose()
        again.dispose()


@pytest.mark.postgres
def test_two_tenants_at_once_on_postgres_count_their_own_rows(pg_database: str) -> None:
    store = PredictionStore(pg_database)
    counts = {"bakery": 600, "grocer": 450}
    errors: list[BaseException] = []

    def traffic(tenant: str, n: int) -> None:
        try:
            for start in range(0, n, 50):
                store.log_predictions([_rec(i, tenant) for i in range(start, min(n, start + 50))])
                for i in [i for i in range(start, min(n, start + 50)) if i % 3 == 0]:
                    store.record_feedback(f"{tenant}-{i:05d}", actual=1.0, tenant=tenant)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=traffic, args=item) for item in counts.items()]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for tenant, n in counts.items():
            frame = store.predictions_frame(MODEL, tenant=tenant)
            assert len(frame) == n and set(frame["prediction_id"].str.split("-").str[0]) == {tenant}
            assert int(frame["actual"].notna().sum()) == len(range(0, n, 3))
            assert store.count_feedback(tenant) == len(range(0, n, 3))
    finally:
        store.dispose()
