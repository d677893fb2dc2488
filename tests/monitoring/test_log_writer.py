"""The prediction log's writer process: same rows as the in-thread writer, errors come back to
the logger (rows kept and retried), a killed child is replaced, nothing queued is lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from shelfwise.monitoring.log_writer import ProcessBatchWriter
from shelfwise.monitoring.store import BufferedPredictionLogger, PredictionStore, StoreError
from tests.monitoring.test_store import _record


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_database")


def test_logger_through_the_writer_process_loses_nothing(url: str) -> None:
    store = PredictionStore(url)
    writer = ProcessBatchWriter(url)
    log = BufferedPredictionLogger(store, flush_interval_ms=20, max_batch_rows=64, write=writer)
    log.log_many([_record(i, order_id=f"o{i % 7}") for i in range(300)])
    assert log.flush(timeout=60)
    assert writer.pid is not None and writer.pid != os.getpid()
    assert store.count_predictions("delay_risk") == 300
    # what the child wrote reads back like a direct write
    frame = store.predictions_frame("delay_risk")
    assert frame["Weight_in_gms"].tolist()[:3] == [1000.0, 1001.0, 1002.0]
    assert frame["order_id"].tolist()[:2] == ["o0", "o1"]
    log.log_many([_record(i, prediction_id=f"late-{i}") for i in range(11)])
    log.close()  # rows queued at shutdown are committed by the child before it stops
    writer.close()
    assert store.count_predictions("delay_risk") == 311 and log.written == 311
    store.dispose()


def test_a_failed_insert_comes_back_as_an_error_and_is_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = PredictionStore(url)
    store.log_predictions([_record(1)])
    writer = ProcessBatchWriter(url)
    with pytest.raises(StoreError, match="IntegrityError"):  # duplicate key, told by the child
        writer([_record(1)])
    assert writer([_record(2)]) == 1  # the child survives a failed batch
    writer.close()
    assert store.count_predictions() == 2


def test_a_killed_writer_process_is_replaced_and_rows_are_kept(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = PredictionStore(url)
    writer = ProcessBatchWriter(url)
    log = BufferedPredictionLogger(store, flush_interval_ms=20, retry_backoff_s=0.05, write=writer)
    log.log_many([_record(i) for i in range(5)])
    assert log.flush(timeout=60)
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    log.log_many([_record(i) for i in range(5, 9)])
    assert log.flush(timeout=60)
    assert writer.restarts == 1 and writer.pid not in (None, first)
    log.close()
    writer.close()
    assert store.count_predictions() == 9 and log.written == 9
