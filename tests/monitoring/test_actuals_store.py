"""The actuals tables (monitoring/actuals.py) on SQLite and on the real PostgreSQL: validation
names the row and column, storage is idempotent per (task, series, period), a late correction
overwrites and leaves an audit row with the old and new values."""

from __future__ import annotations

import pandas as pd
import pytest

from shelfwise.configs.datasets import TimeSeriesDatasetSpec
from shelfwise.monitoring.actuals import (
    ActualsError,
    ActualsStore,
    SeriesCatalogue,
    snapshot,
    validate_actuals,
)

SPEC = TimeSeriesDatasetSpec(
    kind="timeseries",
    name="shop",
    path="shop.csv",
    time_column="date",
    series_keys=["store", "item"],
    target="sales",
    frequency="D",
    regressors=["price"],
)
CATALOGUE = SeriesCatalogue(
    ("store", "item"),
    frozenset({"store", "item"}),
    {(1, 1): pd.Timestamp("2017-12-31"), (1, 2): pd.Timestamp("2017-12-31")},
)


def rows(n: int = 3, item: int = 1, start: str = "2018-01-01", value: float = 10.0) -> list[dict]:
    days = pd.date_range(start, periods=n, freq="D")
    return [
        {"store": 1, "item": item, "date": d.date().isoformat(), "sales": value + i}
        for i, d in enumerate(days)
    ]


@pytest.mark.parametrize(
    ("change", "row", "column", "words"),
    [
        ({"item": 99}, 1, "store", "unknown series (store=1, item=99)"),
        ({"item": "2"}, 1, "item", "must be an integer"),
        ({"sales": "many"}, 1, "sales", "finite number"),
        ({"sales": -3.0}, 1, "sales", "negative"),
        ({"date": "not a date"}, 1, "date", "is not a date"),
        ({"date": "2018-01-02T06:00:00"}, 1, "date", "off its D grid"),
        ({"price": "cheap"}, 1, "price", "regressor 'price'"),
        ({"colour": "red"}, 1, "colour", "unknown column(s) ['colour']"),
        ({"date": "2018-01-01"}, 1, "date", "is also row 0"),
    ],
)
def test_validation_names_row_and_column(change, row, column, words) -> None:
    batch = rows()
    batch[row] = {**batch[row], **change}
    with pytest.raises(ActualsError) as err:
        validate_actuals(batch, SPEC, CATALOGUE, negative_target="error")
    assert err.value.row == row and err.value.column == column
    assert words in str(err.value) and f"row {row}" in str(err.value)
    assert err.value.body()["detail"][0]["loc"] == ["rows", row, column]


def test_missing_column_and_negative_policies() -> None:
    batch = rows()
    del batch[2]["sales"]
    with pytest.raises(ActualsError, match="row 2: column 'sales' is required"):
        validate_actuals(batch, SPEC, CATALOGUE)
    negative = rows()
    negative[0]["sales"] = -4.0
    assert validate_actuals(negative, SPEC, CATALOGUE, "clip")["y"].iloc[0] == 0.0
    assert validate_actuals(negative, SPEC, CATALOGUE, "keep")["y"].iloc[0] == -4.0


def _exercise_store(url: str, folder) -> None:
    store = ActualsStore(url)
    frame = validate_actuals(rows(5), SPEC, CATALOGUE)
    first = store.upsert("shop", frame, SPEC.series_keys, SPEC.regressors, "pos")
    assert (first.inserted, first.updated, first.unchanged) == (5, 0, 0)
    again = store.upsert("shop", frame, SPEC.series_keys, SPEC.regressors, "pos")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 5)
    assert store.count("shop") == 5 and store.audit("shop").empty
    # a late correction of one period (and a new one) -> updated + audit row
    late = rows(2, start="2018-01-05", value=40.0)  # 01-05 existed (value 14), 01-06 is new
    late[0]["price"] = 2.5
    fixed = store.upsert(
        "shop", validate_actuals(late, SPEC, CATALOGUE), SPEC.series_keys, SPEC.regressors, "fix"
    )
    assert (fixed.inserted, fixed.updated, fixed.unchanged) == (1, 1, 0)
    audit = store.audit("shop")
    assert len(audit) == 1
    entry = audit.iloc[0]
    assert entry["old_value"] == 14.0 and entry["new_value"] == 40.0
    assert entry["new_regressors"] == {"price": 2.5} and entry["source"] == "fix"
    assert pd.Timestamp(entry["period"]) == pd.Timestamp("2018-01-05")
    hist = store.series_history("shop", {"store": 1, "item": 1}, SPEC.series_keys, ["price"])
    assert list(hist["y"]) == [10.0, 11.0, 12.0, 13.0, 40.0, 41.0]
    assert hist["price"].iloc[4] == 2.5 and hist["price"].isna().sum() == 5
    after = store.series_history(
        "shop", {"store": 1, "item": 1}, SPEC.series_keys, after=pd.Timestamp("2018-01-04")
    )
    assert list(after["ds"].dt.day) == [5, 6]
    store.upsert(
        "shop", validate_actuals(rows(2, item=2), SPEC, CATALOGUE), SPEC.series_keys, ["price"]
    )
    every = store.task_history("shop", SPEC.series_keys)
    assert len(every) == 8 and set(every["item"]) == {1, 2}
    assert store.count("other_task") == 0  # tasks are kept apart
    assert store.revision("shop")[0] == 8
    # what monitoring reads when no file is given: the data set's own columns
    path = snapshot(store, "shop", SPEC, folder, "now")
    snap = pd.read_parquet(path)
    assert list(snap.columns) == ["store", "item", "date", "sales", "price"] and len(snap) == 8
    assert snap["price"].isna().sum() == 0  # carried forward per series (else 0)
    with pytest.raises(LookupError, match="no actuals ingested for task other_task"):
        snapshot(store, "other_task", SPEC, folder, "now")
    store.engine.dispose()


def test_store_sqlite(tmp_path) -> None:
    _exercise_store(f"sqlite:///{tmp_path / 'store.db'}", tmp_path)


@pytest.mark.postgres
def test_store_postgres(pg_database: str, tmp_path) -> None:
    _exercise_store(pg_database, tmp_path)
