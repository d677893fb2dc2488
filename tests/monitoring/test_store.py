"""The prediction + feedback store on SQLite and on PostgreSQL, and the buffered logger."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from shelfwise.monitoring.store import (
    BufferedPredictionLogger,
    PredictionRecord,
    PredictionStore,
    UnknownPredictionError,
    new_prediction_id,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def _record(
    i: int, order_id: str | None = None, model: str = "delay_risk", **kw
) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=kw.pop("prediction_id", f"p{i:05d}"),
        created_at=kw.pop("created_at", T0 + timedelta(minutes=i)),
        model_name=model,
        model_version=kw.pop("model_version", "1"),
        order_id=order_id,
        inputs=kw.pop("inputs", {"Warehouse_block": "ABCDF"[i % 5], "Weight_in_gms": 1000.0 + i}),
        outputs=kw.pop("outputs", {"delay_probability": i / 100, "severity": "none"}),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sub' / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    s = PredictionStore(url)
    yield s
    s.dispose()


def test_log_and_read_back_flattened_with_feedback_join(store: PredictionStore) -> None:
    store.log_predictions([_record(i, order_id=f"o{i}") for i in range(5)])
    store.log_predictions([_record(0, model="demand_forecast", prediction_id="other")])
    assert store.record_feedback(prediction_id="p00002", actual=1.0).status == "stored"

    df = store.predictions_frame("delay_risk")
    assert list(df.columns) == [
        "prediction_id",
        "created_at",
        "model_name",
        "model_version",
        "order_id",
        "Warehouse_block",
        "Weight_in_gms",
        "delay_probability",
        "severity",
        "actual",
    ]
    assert df["prediction_id"].tolist() == [f"p{i:05d}" for i in range(5)]
    assert str(df["created_at"].dt.tz) == "UTC"
    assert df["created_at"].iloc[0] == T0
    assert df["Weight_in_gms"].tolist() == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]
    assert df["delay_probability"].dtype.kind == "f"
    assert df["actual"].iloc[2] == 1.0
    assert np.isnan(df["actual"].drop(index=2)).all()
    assert set(df["model_name"]) == {"delay_risk"}


def test_window_and_limit(store: PredictionStore) -> None:
    store.log_predictions([_record(i) for i in range(10)])
    window = store.predictions_frame(
        "delay_risk", since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=6)
    )
    assert window["prediction_id"].tolist() == ["p00003", "p00004", "p00005"]
    latest = store.predictions_frame("delay_risk", limit=4)
    assert latest["prediction_id"].tolist() == ["p00006", "p00007", "p00008", "p00009"]
    empty = store.predictions_frame("nobody")
    assert empty.empty and "actual" in empty.columns
    with pytest.raises(ValueError, match="since"):
        store.predictions_frame("delay_risk", since=datetime(2025, 1, 1))


def test_feedback_is_idempotent_and_reports_updates(store: PredictionStore) -> None:
    store.log_predictions([_record(1)])
    first = store.record_feedback(prediction_id="p00001", actual=1)
    again = store.record_feedback(prediction_id="p00001", actual=1.0)
    assert (first.status, again.status) == ("stored", "unchanged")
    changed = store.record_feedback(prediction_id="p00001", actual=0)
    assert changed.status == "updated" and changed.previous == 1.0
    assert store.predictions_frame("delay_risk")["actual"].tolist() == [0.0]


def test_feedback_by_order_id_resolves_latest_prediction(store: PredictionStore) -> None:
    store.log_predictions(
        [
            _record(1, order_id="A-1"),
            _record(7, order_id="A-1"),
            _record(3, order_id="A-1"),
            _record(4, order_id="B-2"),
        ]
    )
    result = store.record_feedback(order_id="A-1", actual=1)
    assert result.prediction_id == "p00007"


def test_feedback_errors_are_clear(store: PredictionStore) -> None:
    store.log_predictions([_record(1, order_id="A-1")])
    with pytest.raises(UnknownPredictionError, match="nope"):
        store.record_feedback(prediction_id="nope", actual=1)
    with pytest.raises(UnknownPredictionError, match="order_id 'Z-9'"):
        store.record_feedback(order_id="Z-9", actual=1)
    with pytest.raises(ValueError, match="exactly one"):
        store.record_feedback(prediction_id="p00001", order_id="A-1", actual=1)
    with pytest.raises(ValueError, match="finite"):
        store.record_feedback(prediction_id="p00001", actual=float("nan"))


def test_feedback_count_since(store: PredictionStore) -> None:
    store.log_predictions([_record(i) for i in range(4)])
    store.log_predictions([_record(9, model="demand_forecast", prediction_id="f1")])
    before = datetime.now(UTC) - timedelta(seconds=1)
    for pid in ("p00000", "p00001", "f1"):
        store.record_feedback(prediction_id=pid, actual=1)
    assert store.feedback_count_since("delay_risk", before) == 2
    assert store.feedback_count_since("delay_risk", datetime.now(UTC) + timedelta(hours=1)) == 0


def test_log_predictions_is_one_transaction(store: PredictionStore) -> None:
    store.log_predictions([_record(1)])
    with pytest.raises(Exception):  # noqa: B017 - backend-specific IntegrityError
        store.log_predictions([_record(2), _record(1)])  # duplicate key in the batch
    assert store.predictions_frame("delay_risk")["prediction_id"].tolist() == ["p00001"]


def test_extra_input_fields_and_name_clashes_are_kept(store: PredictionStore) -> None:
    store.log_predictions(
        [
            _record(1, inputs={"carrier": "DHL", "model_version": "x"}),
            _record(2, inputs={"gift_wrap": True}),
        ]
    )
    df = store.predictions_frame("delay_risk")
    assert df["carrier"].tolist()[0] == "DHL"
    assert df["input_model_version"].tolist()[0] == "x"
    assert df["model_version"].tolist() == ["1", "1"]
    assert bool(df["gift_wrap"].tolist()[1]) is True


def test_buffered_logger_batches_and_loses_nothing(store: PredictionStore) -> None:
    log = BufferedPredictionLogger(store, flush_interval_ms=50, max_batch_rows=64)
    n_threads, per_thread = 4, 250

    def produce(t: int) -> None:
        for i in range(per_thread):
            log.log(_record(i, prediction_id=f"t{t}-{i}-{uuid.uuid4().hex[:6]}"))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert log.flush(timeout=30)
    assert store.count_predictions("delay_risk") == n_threads * per_thread
    # rows logged right before close are written by close (graceful shutdown)
    for i in range(37):
        log.log(_record(i, prediction_id=f"late-{i}"))
    log.close()
    assert store.count_predictions("delay_risk") == n_threads * per_thread + 37
    assert log.dropped == 0 and log.written == n_threads * per_thread + 37
    with pytest.raises(RuntimeError, match="closed"):
        log.log(_record(1))


def test_buffered_logger_writes_on_interval_without_flush(tmp_path: Path) -> None:
    store = PredictionStore(f"sqlite:///{tmp_path / 's.db'}")
    log = BufferedPredictionLogger(store, flush_interval_ms=20, max_batch_rows=10_000)
    log.log(_record(1))
    written = threading.Event()
    for _ in range(200):  # the background thread writes within a few intervals
        if store.count_predictions() == 1:
            written.set()
            break
        threading.Event().wait(0.02)
    log.close()
    assert written.is_set()


def test_buffered_logger_keeps_rows_through_a_failed_write(tmp_path: Path) -> None:
    store = PredictionStore(f"sqlite:///{tmp_path / 's.db'}")
    real = store.log_predictions
    calls = {"n": 0}

    def flaky(records):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk hiccup")
        return real(records)

    store.log_predictions = flaky  # type: ignore[method-assign]
    log = BufferedPredictionLogger(store, flush_interval_ms=10, retry_backoff_s=0.01)
    log.log_many([_record(i) for i in range(5)])
    assert log.flush(timeout=10)
    log.close()
    assert store.count_predictions() == 5
    assert log.failed_writes == 1 and "disk hiccup" in (log.last_error or "")


def test_buffered_logger_drops_and_counts_beyond_the_queue_cap(tmp_path: Path) -> None:
    store = PredictionStore(f"sqlite:///{tmp_path / 's.db'}")
    # the writer sleeps a minute between batches: the queue only fills
    log = BufferedPredictionLogger(
        store, flush_interval_ms=60_000, max_batch_rows=1_000, max_queue_rows=5
    )
    log.log_many([_record(i) for i in range(8)])
    assert (log.pending, log.dropped) == (5, 3)
    log.close()  # writes the 5 queued rows, not the dropped ones
    assert store.count_predictions() == 5 and log.written == 5


def test_prediction_ids_are_uuid7_and_sort_by_time() -> None:
    t = 1_767_225_600_123_456_789  # ns
    ids = [new_prediction_id(t + k * 1_000_000) for k in range(200)]  # one per millisecond
    parsed = [uuid.UUID(i) for i in ids]
    assert all(len(i) == 32 and u.version == 7 for i, u in zip(ids, parsed, strict=True))
    assert all(u.variant == uuid.RFC_4122 for u in parsed)
    assert ids == sorted(ids)  # later milliseconds sort after earlier ones
    assert int(ids[0][:12], 16) == t // 1_000_000  # the leading 48 bits are the time in ms
    same_ms = {new_prediction_id(t) for _ in range(1000)}
    assert len(same_ms) == 1000  # random bits keep ids of one millisecond apart


def test_sqlite_insert_path_stores_what_the_core_insert_stores(tmp_path: Path) -> None:
    """The SQLite writer binds rows itself (serving's hot path); the stored text must be exactly
    what SQLAlchemy's Core insert stores, and read back the same."""
    from sqlalchemy import insert, text

    from shelfwise.monitoring.store import predictions_table

    records = [
        _record(1, order_id="A-1", created_at=datetime(2025, 3, 1, 9, 30, tzinfo=UTC)),
        _record(2, created_at=datetime(2025, 3, 1, 10, 0, 0, 123, tzinfo=timedelta_tz(2))),
        _record(3, inputs={"x": float("nan"), "nested": {"a": [1, 2]}, "s": "é"}),
    ]
    fast = PredictionStore(f"sqlite:///{tmp_path / 'fast.db'}")
    core = PredictionStore(f"sqlite:///{tmp_path / 'core.db'}")
    assert fast.log_predictions(records) == 3
    with core.engine.begin() as conn:
        conn.execute(insert(predictions_table), [r.as_row() for r in records])
    query = text("SELECT * FROM predictions ORDER BY prediction_id")
    with fast.engine.connect() as a, core.engine.connect() as b:
        assert a.execute(query).all() == b.execute(query).all()
    frame = fast.predictions_frame("delay_risk").set_index("prediction_id")
    assert frame.loc["p00002", "created_at"] == datetime(2025, 3, 1, 8, 0, 0, 123, tzinfo=UTC)
    assert frame.loc["p00001", "order_id"] == "A-1"
    assert frame.loc["p00003", "s"] == "é"
    with pytest.raises(ValueError, match="naive"):  # the UTC type's own check still applies
        fast.log_predictions([_record(4, created_at=datetime(2025, 3, 1))])
    assert fast.count_predictions() == 3


def timedelta_tz(hours: int):
    from datetime import timezone

    return timezone(timedelta(hours=hours))
