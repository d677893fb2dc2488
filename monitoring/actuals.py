"""Realised actuals of forecast tasks: validation and the ``actuals`` table of the store.

Rows come in the task's own columns (its dataset spec: the series key columns, the time column,
the target and any declared regressors), over HTTP (``POST /v1/<task>/actuals``) or from a file
(``shelfwise actuals <task> FILE``). They are validated like training data; every error names the
row (0-based, in the order given) and the column, and a batch with an error stores nothing.

Two tables, created on first use beside the prediction store's (same database URL):

- ``actuals(task, series, period) pk, value, regressors JSON, source, received_at, updated_at``:
  one row per series and period, so posting the same rows again changes nothing (idempotent);
- ``actuals_audit(id, task, series, period, old_value, new_value, old_regressors,
  new_regressors, changed_at, source)``: one row per late correction (a changed value or
  regressor), the old and new values side by side.

``series`` is the series' key values as compact JSON in the spec's key order
(``{"store":1,"item":7}``), so any number and type of key columns fit one column.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from shelfwise.configs.datasets import TimeSeriesDatasetSpec
from shelfwise.monitoring.store import UTCDateTime, tables_on, utc_now

logger = logging.getLogger(__name__)

metadata = MetaData()

actuals_table = Table(
    "actuals",
    metadata,
    Column("task", String(200), primary_key=True),
    Column("series", String(400), primary_key=True),
    Column("period", DateTime(), primary_key=True),
    Column("value", Float, nullable=False),
    Column("regressors", JSON, nullable=True),
    Column("source", String(200), nullable=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_actuals_task_period", "task", "period"),
)

audit_table = Table(
    "actuals_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task", String(200), nullable=False),
    Column("series", String(400), nullable=False),
    Column("period", DateTime(), nullable=False),
    Column("old_value", Float, nullable=False),
    Column("new_value", Float, nullable=False),
    Column("old_regressors", JSON, nullable=True),
    Column("new_regressors", JSON, nullable=True),
    Column("changed_at", UTCDateTime(), nullable=False),
    Column("source", String(200), nullable=True),
    Index("ix_actuals_audit_task", "task", "changed_at"),
)

SERIES_CHUNK = 400  # series per IN (...) lookup


class ActualsError(ValueError):
    """A batch of actuals that cannot be stored; ``row`` (0-based) and ``column`` say where."""

    def __init__(self, message: str, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.column = column

    def body(self, list_field: str = "rows") -> dict[str, Any]:
        loc: list[Any] = [list_field]
        if self.row is not None:
            loc.append(self.row)
        if self.column is not None:
            loc.append(self.column)
        return {"error": str(self), "detail": [{"loc": loc, "msg": str(self)}]}


# -- validation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesCatalogue:
    """What a batch is checked against: the known series (key tuples in key order, with the
    last date each was trained on: the grid anchor) and which key columns hold integers."""

    key_columns: tuple[str, ...]
    integer_keys: frozenset[str]
    anchors: Mapping[tuple[Any, ...], pd.Timestamp]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, spec: TimeSeriesDatasetSpec) -> SeriesCatalogue:
        """From a data frame in the spec's columns (e.g. the training data file)."""
        keys = list(spec.series_keys)
        last = frame.groupby(keys, sort=True)[spec.time_column].max()
        anchors = {(k if isinstance(k, tuple) else (k,)): pd.Timestamp(v) for k, v in last.items()}
        ints = frozenset(k for k in keys if pd.api.types.is_integer_dtype(frame[k]))
        return cls(tuple(keys), ints, anchors)


def series_label(keys: Mapping[str, Any] | Sequence[Any], key_columns: Sequence[str]) -> str:
    values = [keys[k] for k in key_columns] if isinstance(keys, Mapping) else list(keys)
    return ", ".join(f"{k}={v}" for k, v in zip(key_columns, values, strict=True))


def series_id(values: Sequence[Any], key_columns: Sequence[str]) -> str:
    """The stored form of a series: its key values as compact JSON, in key order."""
    return json.dumps(dict(zip(key_columns, values, strict=True)), separators=(",", ":"))


def _number(value: Any) -> float | None:
    """A finite float, or None when ``value`` is not a number (booleans are not numbers)."""
    if isinstance(value, bool | np.bool_) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def _period(value: Any, spec: TimeSeriesDatasetSpec) -> pd.Timestamp | None:
    if _is_missing(value):
        return None
    try:
        if isinstance(value, str) and spec.date_format:
            ts = pd.to_datetime(value, format=spec.date_format)
        else:
            ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if ts is pd.NaT:
        return None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if spec.frequency == "M":
        ts = ts.to_period("M").to_timestamp()
    return ts


_STEP_NS = {"H": 3_600 * 10**9, "D": 86_400 * 10**9, "W": 7 * 86_400 * 10**9}


def _on_grid(ts: pd.Timestamp, anchor: pd.Timestamp, frequency: str) -> bool:
    if frequency == "M":
        return True  # monthly periods were moved to month starts
    return (ts.value - anchor.value) % _STEP_NS[frequency] == 0


def validate_actuals(
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    spec: TimeSeriesDatasetSpec,
    catalogue: SeriesCatalogue,
    negative_target: str = "error",
) -> pd.DataFrame:
    """Rows in the spec's columns -> a frame of the key columns, ``ds``, ``y`` and every declared
    regressor (NaN where a row gives none). Raises ``ActualsError`` naming the row and column:
    unknown columns, a missing key/date/target, a key of the wrong type, an unknown series, a
    date off the series' grid, a non-numeric or (per ``negative_target``) negative target, a
    non-numeric regressor, the same series and period twice."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    if not records:
        raise ActualsError("no rows: send at least one actual")
    keys = list(catalogue.key_columns)
    allowed = {*keys, spec.time_column, spec.target, *spec.regressors}
    required = [*keys, spec.time_column, spec.target]
    out: dict[str, list[Any]] = {c: [] for c in [*keys, "ds", "y", *spec.regressors]}
    seen: dict[tuple[Any, ...], int] = {}
    for i, row in enumerate(records):
        unknown = sorted(set(row) - allowed)
        if unknown:
            declared = ", ".join(spec.regressors) or "none"
            raise ActualsError(
                f"row {i}: unknown column(s) {unknown}; an actual has the series keys "
                f"({', '.join(keys)}), {spec.time_column!r}, {spec.target!r} and declared "
                f"regressors ({declared})",
                i,
                unknown[0],
            )
        for col in required:
            if col not in row or _is_missing(row[col]):
                raise ActualsError(f"row {i}: column {col!r} is required", i, col)
        key_values: list[Any] = []
        for k in keys:
            v = row[k]
            if k in catalogue.integer_keys:
                if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
                    if isinstance(v, float) and v.is_integer():
                        v = int(v)
                    else:
                        raise ActualsError(
                            f"row {i}: series key {k!r} must be an integer, got {v!r}", i, k
                        )
                v = int(v)
            else:
                v = str(v)
            key_values.append(v)
        key = tuple(key_values)
        anchor = catalogue.anchors.get(key)
        if anchor is None:
            raise ActualsError(
                f"row {i}: unknown series ({series_label(key, keys)}): not in the training data",
                i,
                keys[0],
            )
        ts = _period(row[spec.time_column], spec)
        if ts is None:
            fmt = spec.date_format or "ISO 8601"
            raise ActualsError(
                f"row {i}: column {spec.time_column!r} value {row[spec.time_column]!r} is not a "
                f"date ({fmt})",
                i,
                spec.time_column,
            )
        if not _on_grid(ts, anchor, spec.frequency):
            raise ActualsError(
                f"row {i}: date {ts} of series ({series_label(key, keys)}) is off its "
                f"{spec.frequency} grid (periods are aligned with {anchor.date()})",
                i,
                spec.time_column,
            )
        y = _number(row[spec.target])
        if y is None:
            raise ActualsError(
                f"row {i}: column {spec.target!r} must be a finite number, got "
                f"{row[spec.target]!r}",
                i,
                spec.target,
            )
        if y < 0:
            if negative_target == "error":
                raise ActualsError(
                    f"row {i}: column {spec.target!r} is negative ({y}); this task's "
                    "data.negative_target is error",
                    i,
                    spec.target,
                )
            if negative_target == "clip":
                y = 0.0
        for r in spec.regressors:
            value = row.get(r)
            if _is_missing(value):
                out[r].append(np.nan)
                continue
            num = _number(value)
            if num is None:
                raise ActualsError(
                    f"row {i}: regressor {r!r} must be a finite number, got {value!r}", i, r
                )
            out[r].append(num)
        first = seen.get((*key, ts))
        if first is not None:
            raise ActualsError(
                f"row {i}: series ({series_label(key, keys)}) period {ts} is also row {first}",
                i,
                spec.time_column,
            )
        seen[(*key, ts)] = i
        for k, v in zip(keys, key_values, strict=True):
            out[k].append(v)
        out["ds"].append(ts)
        out["y"].append(y)
    frame = pd.DataFrame(out)
    frame["ds"] = pd.to_datetime(frame["ds"])
    return frame


# -- the store ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    unchanged: int

    @property
    def rows(self) -> int:
        return self.inserted + self.updated + self.unchanged


def _regressor_map(row: Mapping[str, Any], regressors: Sequence[str]) -> dict[str, float] | None:
    out = {r: float(row[r]) for r in regressors if not _is_missing(row.get(r))}
    return out or None


class ActualsStore:
    """The ``actuals`` and ``actuals_audit`` tables in the store's database."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        self.engine = tables_on(url_or_engine, metadata, "actuals")

    def upsert(
        self,
        task: str,
        frame: pd.DataFrame,
        key_columns: Sequence[str],
        regressors: Sequence[str] = (),
        source: str | None = None,
    ) -> UpsertResult:
        """Store validated actuals (``validate_actuals``) in one transaction: new (series,
        period) rows are inserted, a changed value or regressor is updated with an audit row,
        an identical row changes nothing. A concurrent writer of the same new rows makes the
        transaction retry once (then they are updates or unchanged)."""
        for attempt in (1, 2):
            try:
                return self._upsert(task, frame, list(key_columns), list(regressors), source)
            except IntegrityError:
                if attempt == 2:
                    raise
                logger.info("actuals of %s: concurrent insert, retrying once", task)
        raise AssertionError("unreachable")

    def _upsert(
        self,
        task: str,
        frame: pd.DataFrame,
        keys: list[str],
        regressors: list[str],
        source: str | None,
    ) -> UpsertResult:
        a = actuals_table
        now = utc_now()
        records = frame.to_dict("records")
        sids = [series_id([r[k] for k in keys], keys) for r in records]
        periods = [pd.Timestamp(r["ds"]).to_pydatetime() for r in records]
        wanted = sorted(set(sids))
        lo, hi = min(periods), max(periods)
        inserts, updates, audits = [], [], []
        unchanged = 0
        with self.engine.begin() as conn:
            existing: dict[tuple[str, datetime], tuple[float, Any]] = {}
            for i in range(0, len(wanted), SERIES_CHUNK):
                chunk = wanted[i : i + SERIES_CHUNK]
                query = select(a.c.series, a.c.period, a.c.value, a.c.regressors).where(
                    a.c.task == task,
                    a.c.series.in_(chunk),
                    a.c.period >= lo,
                    a.c.period <= hi,
                )
                for s, p, v, regs in conn.execute(query):
                    existing[(s, pd.Timestamp(p).to_pydatetime())] = (float(v), regs)
            for sid, period, row in zip(sids, periods, records, strict=True):
                value = float(row["y"])
                regs = _regressor_map(row, regressors)
                old = existing.get((sid, period))
                if old is None:
                    inserts.append(
                        {
                            "task": task,
                            "series": sid,
                            "period": period,
                            "value": value,
                            "regressors": regs,
                            "source": source,
                            "received_at": now,
                            "updated_at": now,
                        }
                    )
                    continue
                old_value, old_regs = old
                merged = {**(old_regs or {}), **(regs or {})} or None
                if old_value == value and merged == (old_regs or None):
                    unchanged += 1
                    continue
                updates.append(
                    {
                        "b_series": sid,
                        "b_period": period,
                        "value": value,
                        "regressors": merged,
                        "source": source,
                        "updated_at": now,
                    }
                )
                audits.append(
                    {
                        "task": task,
                        "series": sid,
                        "period": period,
                        "old_value": old_value,
                        "new_value": value,
                        "old_regressors": old_regs,
                        "new_regressors": merged,
                        "changed_at": now,
                        "source": source,
                    }
                )
            if inserts:
                conn.execute(insert(a), inserts)
            if updates:
                stmt = (
                    update(a)
                    .where(
                        and_(
                            a.c.task == task,
                            a.c.series == bindparam("b_series"),
                            a.c.period == bindparam("b_period"),
                        )
                    )
                    .values(
                        value=bindparam("value"),
                        regressors=bindparam("regressors"),
                        source=bindparam("source"),
                        updated_at=bindparam("updated_at"),
                    )
                )
                conn.execute(stmt, updates)
                conn.execute(insert(audit_table), audits)
        result = UpsertResult(len(inserts), len(updates), unchanged)
        logger.info(
            "actuals of %s: %s new, %s corrected, %s unchanged",
            task,
            result.inserted,
            result.updated,
            result.unchanged,
        )
        return result

    def series_history(
        self,
        task: str,
        keys: Mapping[str, Any],
        key_columns: Sequence[str],
        regressors: Sequence[str] = (),
        after: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """One series' actuals (ds, y, regressors) after ``after``, oldest first."""
        a = actuals_table
        sid = series_id([keys[k] for k in key_columns], key_columns)
        query = select(a.c.period, a.c.value, a.c.regressors).where(
            a.c.task == task, a.c.series == sid
        )
        if after is not None:
            query = query.where(a.c.period > pd.Timestamp(after).to_pydatetime())
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(a.c.period)).all()
        return _history_frame([(None, p, v, r) for p, v, r in rows], regressors)[
            ["ds", "y", *regressors]
        ]

    def task_history(
        self,
        task: str,
        key_columns: Sequence[str],
        after: pd.Timestamp | None = None,
        regressors: Sequence[str] = (),
    ) -> pd.DataFrame:
        """Every series' actuals of ``task`` after ``after``: key columns, ds, y, regressors."""
        a = actuals_table
        query = select(a.c.series, a.c.period, a.c.value, a.c.regressors).where(a.c.task == task)
        if after is not None:
            query = query.where(a.c.period > pd.Timestamp(after).to_pydatetime())
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(a.c.series, a.c.period)).all()
        frame = _history_frame(rows, regressors)
        parsed = [json.loads(s) for s in frame.pop("series")] if len(frame) else []
        for k in key_columns:
            frame[k] = [p[k] for p in parsed]
        return frame[[*key_columns, "ds", "y", *regressors]]

    def revision(self, task: str) -> tuple[int, datetime | None]:
        """(rows, latest update) of a task's actuals: changes whenever anything is stored."""
        a = actuals_table
        query = select(func.count(), func.max(a.c.updated_at)).where(a.c.task == task)
        with self.engine.connect() as conn:
            count, latest = conn.execute(query).one()
        return int(count), latest

    def count(self, task: str) -> int:
        return self.revision(task)[0]

    def audit(self, task: str) -> pd.DataFrame:
        """The task's corrections, oldest first."""
        t = audit_table
        query = select(t).where(t.c.task == task).order_by(t.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return pd.DataFrame([dict(r) for r in rows])


def _history_frame(rows: Iterable[Any], regressors: Sequence[str]) -> pd.DataFrame:
    rows = list(rows)
    data: dict[str, list[Any]] = {
        "series": [r[0] for r in rows],
        "ds": [pd.Timestamp(r[1]) for r in rows],
        "y": [float(r[2]) for r in rows],
    }
    for reg in regressors:
        data[reg] = [float((r[3] or {}).get(reg, np.nan)) for r in rows]
    frame = pd.DataFrame(data)
    frame["ds"] = pd.to_datetime(frame["ds"])
    return frame


def snapshot(
    store: ActualsStore, task: str, spec: TimeSeriesDatasetSpec, folder: Any, stamp: str
) -> Any:
    """Every ingested actual of ``task`` as a Parquet file in the data set's own columns (what
    ``shelfwise monitor --actuals`` and the retraining read), ``<folder>/<task>-<stamp>.parquet``;
    a regressor an actual did not give is carried forward per series. Raises LookupError when
    none was ingested."""
    from pathlib import Path

    keys = list(spec.series_keys)
    frame = store.task_history(task, keys, regressors=spec.regressors)
    if frame.empty:
        raise LookupError(
            f"no actuals ingested for task {task}: POST /v1/<task>/actuals or shelfwise actuals"
        )
    if spec.regressors:
        frame[list(spec.regressors)] = frame.groupby(keys)[list(spec.regressors)].ffill()
        frame[list(spec.regressors)] = frame[list(spec.regressors)].fillna(0.0)
    out = frame.rename(columns={"ds": spec.time_column, "y": spec.target})
    path = Path(folder) / f"{task}-{stamp}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(path, index=False)
    return path
