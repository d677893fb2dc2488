"""Real users' time-series files: negative targets (returns) per policy, the wide layout (one
column per product), hourly to monthly frequencies, CSV and Parquet; errors name the file, the
column and the row."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.datasets import TimeSeriesDatasetSpec, load_timeseries_spec
from shelfwise.configs.forecast import ForecastConfig
from shelfwise.models.datasets import (
    NEGATIVE_COUNT_ATTR,
    DatasetError,
    load_timeseries,
)
from shelfwise.models.forecast import (
    future_dates,
    periods_between,
    prepare_panel,
    seasonal_naive,
    shift_periods,
    split_at,
)


@pytest.fixture(scope="module")
def store_item(data_dir):
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    return df


def _wide_from_real(store_item: pd.DataFrame, n_items: int = 3) -> pd.DataFrame:
    """Store 1's first items, one column per item (an export with a column per product)."""
    sub = store_item[(store_item["store"] == 1) & (store_item["item"] <= n_items)]
    wide = sub.pivot(index="date", columns="item", values="sales")
    wide.columns = [f"item_{c}" for c in wide.columns]
    return wide.reset_index().assign(date=lambda d: d["date"].dt.strftime("%Y-%m-%d"))


def _spec(path, **over) -> TimeSeriesDatasetSpec:
    base = {"name": "t", "path": str(path), "time_column": "date"}
    return TimeSeriesDatasetSpec.model_validate({**base, **over})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_wide_file_becomes_one_series_per_column(tmp_path, store_item, fmt):
    wide = _wide_from_real(store_item)
    path = tmp_path / f"wide.{fmt}"
    wide.to_csv(path, index=False) if fmt == "csv" else wide.to_parquet(path, index=False)
    spec = _spec(path, format=fmt, layout="wide", target="sales")
    assert spec.series_keys == ["series"]
    df, _ = load_timeseries(spec, tmp_path)
    assert sorted(df["series"].unique()) == ["item_1", "item_2", "item_3"]
    assert len(df) == 3 * len(wide)
    cfg = ForecastConfig(horizon=28, features={"lags": [28, 364]}, data={"max_series": None})
    panel = prepare_panel(df, spec, cfg)
    assert panel.n_series == 3 and panel.key_columns == ["series"]
    one = df[(df["series"] == "item_2")].sort_values("date")["sales"].to_numpy()
    real = store_item[(store_item["store"] == 1) & (store_item["item"] == 2)]["sales"].to_numpy()
    np.testing.assert_array_equal(one, real)
    # value_columns picks columns; the rest are ignored
    picked, _ = load_timeseries(
        _spec(path, format=fmt, layout="wide", value_columns=["item_3"]), tmp_path
    )
    assert picked["series"].unique().tolist() == ["item_3"] and "y" in picked.columns


def test_wide_file_errors_name_file_column_and_row(tmp_path, store_item):
    wide = _wide_from_real(store_item).astype({"item_2": object})
    wide.loc[4, "item_2"] = "n/a?"
    path = tmp_path / "wide.csv"
    wide.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"wide\.csv: column 'item_2' must be numeric; row 5"):
        load_timeseries(_spec(path, layout="wide"), tmp_path)
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['item_9'\]"):
        load_timeseries(_spec(path, layout="wide", value_columns=["item_9"]), tmp_path)
    with pytest.raises(ValueError, match="series_keys"):
        _spec(path, layout="wide", series_keys=["store"])


def test_negative_targets_error_clip_or_keep_with_a_count(tmp_path, store_item, caplog):
    rows = store_item[(store_item["store"] == 1) & (store_item["item"] <= 2)].copy()
    rows = rows.reset_index(drop=True)
    rows.loc[[3, 10, 700], "sales"] = [-2.0, -5.0, -1.0]  # returns
    path = tmp_path / "sales.csv"
    rows.assign(date=rows["date"].dt.strftime("%Y-%m-%d")).to_csv(path, index=False)
    spec = _spec(path, series_keys=["store", "item"], target="sales")
    with pytest.raises(
        DatasetError, match=r"sales\.csv: column 'sales' has a negative value at row 4 .*3 negative"
    ):
        load_timeseries(spec, tmp_path, "error")
    with caplog.at_level(logging.WARNING):
        clipped, _ = load_timeseries(spec, tmp_path, "clip")
    assert clipped.attrs[NEGATIVE_COUNT_ATTR] == {"policy": "clip", "rows": 3}
    assert (clipped["sales"] >= 0).all() and clipped.loc[[3, 10, 700], "sales"].eq(0).all()
    assert "clipped 3 negative 'sales' value(s)" in caplog.text
    kept, _ = load_timeseries(spec, tmp_path, "keep")
    assert kept.attrs[NEGATIVE_COUNT_ATTR] == {"policy": "keep", "rows": 3}
    assert kept.loc[[3, 10, 700], "sales"].tolist() == [-2.0, -5.0, -1.0]


def test_period_arithmetic_for_every_frequency():
    for freq, start, n in (
        ("H", "2024-03-01 22:00", 5),
        ("D", "2024-02-27", 5),
        ("W", "2024-01-05", 3),
        ("M", "2024-11-01", 4),
    ):
        dates = future_dates(pd.Timestamp(start), n, freq)
        assert len(dates) == n
        assert periods_between(pd.Timestamp(start), dates.to_numpy(), freq).tolist() == list(
            range(1, n + 1)
        )
        back = shift_periods(dates.to_numpy(), -np.arange(1, n + 1), freq)
        assert (pd.DatetimeIndex(back) == pd.Timestamp(start)).all()
    assert future_dates(pd.Timestamp("2024-11-01"), 3, "M").tolist() == [
        pd.Timestamp("2024-12-01"),
        pd.Timestamp("2025-01-01"),
        pd.Timestamp("2025-02-01"),
    ]


def test_monthly_file_with_month_end_dates_is_a_month_start_panel(tmp_path, store_item):
    sub = store_item[(store_item["store"] == 1) & (store_item["item"] <= 2)]
    monthly = (
        sub.groupby(["store", "item", pd.Grouper(key="date", freq="ME")])["sales"]
        .sum()
        .reset_index()
    )
    path = tmp_path / "monthly.parquet"
    monthly.to_parquet(path, index=False)
    spec = _spec(
        path, format="parquet", series_keys=["store", "item"], target="sales", frequency="M"
    )
    df, _ = load_timeseries(spec, tmp_path)
    cfg = ForecastConfig(
        horizon=6,
        features={
            "lags": [6, 12],
            "rolling_windows": [3],
            "level_window": 12,
            "calendar": ["month", "year"],
        },
        data={"min_history": 24},
    )
    panel = prepare_panel(df, spec, cfg)
    assert panel.n_series == 2 and (panel.frame["ds"].dt.day == 1).all()
    assert panel.frame.groupby("sid").size().tolist() == [60, 60]
    train, test = split_at(panel, panel.frame["ds"].max() - 6 * panel.step, 6)
    fc = seasonal_naive(train, test.frame[["sid", "ds"]], 12)
    t = train.frame
    want = t[(t["sid"] == 0) & t["ds"].between("2016-07-01", "2016-12-01")]["y"].to_numpy()
    np.testing.assert_array_equal(fc["yhat"].to_numpy()[:6], want[:6])
