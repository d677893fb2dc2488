"""The store's online-evaluation columns on SQLite and the real PostgreSQL: a shadow row is
paired with its answer (``pair_of``) and scored by the answer's feedback, feedback by entity id
never lands on a shadow, the monitoring reads see only answered rows, and a store made before
the columns existed gains them (existing rows are the champion's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from shelfwise.monitoring.store import PredictionRecord, PredictionStore, normalise_url
from tests.monitoring.test_store_tenants import OLD_SCHEMA

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = "delay_risk"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_database")


def _pair(i: int) -> list[PredictionRecord]:
    answer = PredictionRecord(
        f"a{i}",
        MODEL,
        "1",
        {"x": 1.0},
        {"p": 0.2},
        order_id=f"o{i}",
        latency_ms=1.5,
        created_at=T0 + timedelta(seconds=i),
    )
    shadow = PredictionRecord(
        f"s{i}",
        MODEL,
        "2",
        {"x": 1.0},
        {"p": 0.7},
        order_id=f"o{i}",
        role="shadow",
        pair_of=f"a{i}",
        created_at=T0 + timedelta(seconds=i, milliseconds=5),
    )
    return [answer, shadow]


def test_shadow_rows_are_paired_and_kept_out_of_feedback_and_monitoring(store_url: str) -> None:
    store = PredictionStore(store_url)
    try:
        store.log_predictions([r for i in range(3) for r in _pair(i)])
        # the shadow is the latest row of o1: feedback by entity still finds the answer
        assert store.record_feedback(order_id="o1", actual=1.0).prediction_id == "a1"
        frame = store.predictions_frame(MODEL)
        assert list(frame["prediction_id"]) == ["a0", "a1", "a2"]
        assert len(store.predictions_frame(MODEL, roles=None)) == 6
        rows = store.online_rows(MODEL, "p").set_index("prediction_id")
        assert rows.loc["s1", "actual"] == 1.0 and rows.loc["a1", "actual"] == 1.0
        assert rows.loc["s1", "pair_of"] == "a1" and rows.loc["s1", "role"] == "shadow"
        assert rows.loc["s1", "prediction"] == pytest.approx(0.7)
        assert rows.loc["a0", "latency_ms"] == pytest.approx(1.5)
        assert rows["actual"].notna().sum() == 2
    finally:
        store.dispose()


def test_a_store_made_before_online_evaluation_gains_the_columns(store_url: str) -> None:
    engine = create_engine(normalise_url(store_url))
    with engine.begin() as conn:
        for sql in OLD_SCHEMA:
            conn.execute(text(sql))
    engine.dispose()
    store = PredictionStore(store_url)
    again = PredictionStore(store_url)  # idempotent
    try:
        columns = {c["name"] for c in inspect(store.engine).get_columns("predictions")}
        assert {"role", "pair_of", "latency_ms"} <= columns
        old = store.online_rows(MODEL, "p")
        assert list(old["role"]) == ["champion"] and old["actual"].tolist() == [1.0]
        store.log_predictions(_pair(7))
        assert len(store.online_rows(MODEL, "p")) == 3
    finally:
        store.dispose()
        again.dispose()
