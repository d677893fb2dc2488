"""Read and validate a user's CSV/Parquet against its dataset spec; split and fingerprint it."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from shelfwise.configs.datasets import TabularDatasetSpec, TimeSeriesDatasetSpec

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A data file does not match its spec. The message names the file and the column or row."""


def resolve_data_path(path: Path, data_dir: Path) -> Path:
    return path if path.is_absolute() else (data_dir / path)


def read_table(path: Path, fmt: str, encoding: str = "utf-8") -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"data file not found: {path}")
    try:
        df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, encoding=encoding)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: file is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise DatasetError(f"{path}: cannot be read as {fmt}: {exc}") from None
    df.columns = [str(c).lstrip("\ufeff").strip() for c in df.columns]
    if df.empty:
        raise DatasetError(f"{path}: file has a header but no data rows")
    return df


def _require_columns(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {missing}; columns present: {list(df.columns)}"
        )


def _first_bad_row(mask: pd.Series) -> int:
    """1-based data-row number (header excluded) of the first True in mask."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


TRUE_WORDS = {"true", "yes", "y", "t"}
FALSE_WORDS = {"false", "no", "n", "f"}
MISSING_CATEGORY = "__missing__"


def _boolean_words(values: pd.Series) -> pd.Series | None:
    """0/1 for a column of booleans written as words (TRUE/FALSE, yes/no, Y/N, t/f, any case)
    or as bools; None when some non-missing value is not such a word (or all are numbers)."""
    present = values.dropna()
    if (
        present.empty
        or pd.api.types.is_numeric_dtype(present)
        and not pd.api.types.is_bool_dtype(present)
    ):
        return None
    words = present.astype(str).str.strip().str.lower()
    if not words.isin(TRUE_WORDS | FALSE_WORDS).all():
        return None
    mapped = values.astype("string").str.strip().str.lower()
    return mapped.map(lambda v: np.nan if pd.isna(v) else float(v in TRUE_WORDS))


def _note(report: dict[str, int] | None, key: str, count: int, message: str) -> None:
    logger.info(message)
    if report is not None:
        report[key] = report.get(key, 0) + int(count)


def validate_tabular(
    df: pd.DataFrame,
    spec: TabularDatasetSpec,
    path: Path,
    kind: str = "classification",
    policy: Any = None,
    report: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Check columns, types and missing values; return the frame with numeric columns as float.

    ``kind``: ``classification`` (a 0/1 target, booleans written as words parsed) or
    ``regression`` (a numeric target). ``policy`` (a task's ``DataPolicy``; None: refuse missing
    values, keep negative targets) decides what happens to missing feature values (``keep``:
    NaN in numeric columns, ``__missing__`` in categorical ones; ``impute``: the same here, the
    pipelines impute; ``error``: refused naming the column and the first row) and to negative
    regression targets (``error``, ``clip`` to 0, ``keep``). Each treatment is logged with its
    count and added to ``report`` (treatment -> count).
    """
    missing = getattr(policy, "missing", "error")
    negative = getattr(policy, "negative_target", "keep")
    cols = [*spec.features, spec.target] + ([spec.id_column] if spec.id_column else [])
    _require_columns(df, cols, path)
    out = df.copy()
    for col in spec.numeric:
        words = _boolean_words(out[col])
        if words is not None:
            _note(
                report,
                f"boolean_words:{col}",
                int(out[col].notna().sum()),
                f"{path}: column {col!r}: {int(out[col].notna().sum())} boolean words -> 0/1",
            )
            out[col] = words
        converted = pd.to_numeric(out[col], errors="coerce")
        bad = converted.isna() & out[col].notna()
        if bad.any():
            word = out[col].astype(str).str.strip().str.lower().isin(TRUE_WORDS | FALSE_WORDS)
            what = "numeric"
            if (word & bad).any():  # booleans as words, with a value that is not one
                bad, what = bad & ~word, "numeric or booleans (TRUE/FALSE, yes/no, Y/N)"
            row = _first_bad_row(bad)
            raise DatasetError(
                f"{path}: column {col!r} must be {what}; row {row} has {out[col].iloc[row - 1]!r}"
            )
        out[col] = converted.astype(float)
    for col in spec.features:
        nulls = out[col].isna()
        if not nulls.any():
            continue
        if missing == "error":
            raise DatasetError(
                f"{path}: column {col!r} has a missing value at row {_first_bad_row(nulls)} "
                "(the task's data.missing is 'error'; 'keep' or 'impute' accept it)"
            )
        treatment = "kept as NaN" if col in spec.numeric else f"category {MISSING_CATEGORY!r}"
        if col in spec.numeric and missing == "impute":
            treatment = "imputed (median of the training rows) by every family's pipeline"
        _note(
            report,
            f"missing:{col}",
            int(nulls.sum()),
            f"{path}: column {col!r}: {int(nulls.sum())} missing value(s) {treatment}",
        )
        if col in spec.categorical:
            out[col] = out[col].where(~nulls, MISSING_CATEGORY)
    for col in spec.categorical:
        out[col] = out[col].astype(str)
    nulls = out[spec.target].isna()
    if nulls.any():
        raise DatasetError(
            f"{path}: target column {spec.target!r} has a missing value at row "
            f"{_first_bad_row(nulls)}"
        )
    if kind == "regression":
        out[spec.target] = _regression_target(out, spec, path, negative, report)
        return out
    raw_target = out[spec.target]
    words = _boolean_words(raw_target)
    if words is not None:
        _note(
            report,
            f"boolean_words:{spec.target}",
            len(raw_target),
            f"{path}: target {spec.target!r}: {len(raw_target)} boolean words -> 0/1",
        )
        raw_target = words
    target = pd.to_numeric(raw_target, errors="coerce")
    labels = set(target.dropna().unique().tolist())
    if target.isna().any() or not labels <= {0, 1}:
        bad = target.isna() | ~target.isin([0, 1])
        words = raw_target.astype(str).str.strip().str.lower().isin(TRUE_WORDS | FALSE_WORDS)
        if words.any() and not words.all():  # booleans as words, with a value that is not one
            bad = ~words & ~pd.to_numeric(raw_target, errors="coerce").isin([0, 1])
        row = _first_bad_row(bad)
        raise DatasetError(
            f"{path}: target column {spec.target!r} must be 0/1 (or booleans written "
            f"TRUE/FALSE, yes/no, Y/N); row {row} has {df[spec.target].iloc[row - 1]!r}"
        )
    if len(labels) < 2:
        raise DatasetError(f"{path}: target column {spec.target!r} has a single class {labels}")
    out[spec.target] = target.astype(int)
    return out


def _regression_target(
    out: pd.DataFrame,
    spec: TabularDatasetSpec,
    path: Path,
    negative: str,
    report: dict[str, int] | None,
) -> pd.Series:
    target = pd.to_numeric(out[spec.target], errors="coerce")
    bad = target.isna()
    if bad.any():
        row = _first_bad_row(bad)
        raise DatasetError(
            f"{path}: target column {spec.target!r} must be numeric; row {row} has "
            f"{out[spec.target].iloc[row - 1]!r}"
        )
    target = target.astype(float)
    neg = target < 0
    if neg.any():
        n = int(neg.sum())
        if negative == "error":
            raise DatasetError(
                f"{path}: target column {spec.target!r} has a negative value at row "
                f"{_first_bad_row(neg)} (the task's data.negative_target is 'error')"
            )
        if negative == "clip":
            _note(
                report,
                f"negative_target_clipped:{spec.target}",
                n,
                f"{path}: {n} negative target value(s) in {spec.target!r} clipped to 0",
            )
            target = target.clip(lower=0.0)
        else:
            _note(
                report,
                f"negative_target_kept:{spec.target}",
                n,
                f"{path}: {n} negative target value(s) in {spec.target!r} kept",
            )
    if target.nunique() < 2:
        raise DatasetError(f"{path}: target column {spec.target!r} is constant")
    return target


def load_tabular(
    spec: TabularDatasetSpec,
    data_dir: Path,
    kind: str = "classification",
    policy: Any = None,
    report: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, Path]:
    path = resolve_data_path(spec.path, data_dir)
    df = read_table(path, spec.format, spec.encoding)
    logger.info("read %s rows x %s columns from %s", len(df), df.shape[1], path)
    return validate_tabular(df, spec, path, kind, policy, report), path


NEGATIVE_COUNT_ATTR = "shelfwise.negative_target"  # df.attrs key: {"policy", "rows"}


def wide_to_long(df: pd.DataFrame, spec: TimeSeriesDatasetSpec, path: Path) -> pd.DataFrame:
    """A wide file (one row per time, one column per series) -> the long layout: one row per
    (series, time), the column name in ``spec.series_column``, the value in ``spec.target``.
    A non-numeric value names its column and row (1-based data row of the file)."""
    if spec.layout != "wide":
        return df
    _require_columns(df, [spec.time_column, *spec.regressors], path)
    fixed = {spec.time_column, *spec.regressors}
    values = list(spec.value_columns or [c for c in df.columns if c not in fixed])
    _require_columns(df, values, path)
    if not values:
        raise DatasetError(
            f"{path}: layout wide needs value columns besides {spec.time_column!r} and the "
            f"regressors; columns present: {list(df.columns)}"
        )
    for col in values:
        converted = pd.to_numeric(df[col], errors="coerce")
        bad = converted.isna() & df[col].notna()
        if bad.any():
            row = _first_bad_row(bad)
            raise DatasetError(
                f"{path}: column {col!r} must be numeric; row {row} has {df[col].iloc[row - 1]!r}"
            )
    long = df.melt(
        id_vars=[spec.time_column, *spec.regressors],
        value_vars=values,
        var_name=spec.series_column,
        value_name=spec.target,
    )
    # a series starts at its first value: leading blanks of a product listed later are no gaps
    long = long[long[spec.target].notna()].reset_index(drop=True)
    long[spec.series_column] = long[spec.series_column].astype(str)
    logger.info("%s: wide layout, %s value columns -> %s series", path, len(values), len(values))
    return long


def apply_negative_target(
    df: pd.DataFrame, spec: TimeSeriesDatasetSpec, path: Path, policy: str
) -> pd.DataFrame:
    """Negative targets (returns) per ``policy``: ``error`` names the first row, ``clip`` sets
    them to 0, ``keep`` leaves them; the count is logged and kept in ``df.attrs``."""
    neg = df[spec.target] < 0
    n = int(neg.sum())
    out = df
    if n and policy == "error":
        row = _first_bad_row(neg)
        raise DatasetError(
            f"{path}: column {spec.target!r} has a negative value at row {row} "
            f"({df[spec.target].iloc[row - 1]!r}; {n} negative row(s) in all); set the task's "
            "data.negative_target to clip or keep to accept returns"
        )
    if n and policy == "clip":
        out = df.copy()
        out[spec.target] = out[spec.target].clip(lower=0.0)
        logger.warning("%s: clipped %s negative %r value(s) to 0", path, n, spec.target)
    elif n:
        logger.warning("%s: kept %s negative %r value(s)", path, n, spec.target)
    out.attrs[NEGATIVE_COUNT_ATTR] = {"policy": policy, "rows": n}
    return out


def validate_timeseries(
    df: pd.DataFrame,
    spec: TimeSeriesDatasetSpec,
    path: Path,
    negative_target: str = "error",
) -> pd.DataFrame:
    """Check columns and parse dates and target; duplicates are errors, negative targets are
    handled per ``negative_target`` (error | clip | keep). A wide file is melted first."""
    df = wide_to_long(df, spec, path)
    _require_columns(df, [spec.time_column, *spec.series_keys, spec.target, *spec.regressors], path)
    out = df.copy()
    parsed = pd.to_datetime(out[spec.time_column], format=spec.date_format, errors="coerce")
    bad = parsed.isna()
    if bad.any():
        row = _first_bad_row(bad)
        raise DatasetError(
            f"{path}: column {spec.time_column!r} row {row} value "
            f"{out[spec.time_column].iloc[row - 1]!r} does not match format "
            f"{spec.date_format or 'ISO 8601'}"
        )
    out[spec.time_column] = parsed
    for col in [spec.target, *spec.regressors]:
        converted = pd.to_numeric(out[col], errors="coerce")
        bad = converted.isna()
        if bad.any():
            row = _first_bad_row(bad)
            raise DatasetError(
                f"{path}: column {col!r} must be numeric; row {row} has {out[col].iloc[row - 1]!r}"
            )
        out[col] = converted.astype(float)
    out = apply_negative_target(out, spec, path, negative_target)
    dup = out.duplicated([*spec.series_keys, spec.time_column], keep="first")
    if dup.any():
        raise DatasetError(
            f"{path}: duplicate ({', '.join(spec.series_keys)}, {spec.time_column}) at row "
            f"{_first_bad_row(dup)}"
        )
    return out


def load_timeseries(
    spec: TimeSeriesDatasetSpec, data_dir: Path, negative_target: str = "error"
) -> tuple[pd.DataFrame, Path]:
    path = resolve_data_path(spec.path, data_dir)
    df = read_table(path, spec.format, spec.encoding)
    logger.info("read %s rows from %s", len(df), path)
    return validate_timeseries(df, spec, path, negative_target), path


def stratified_split(
    df: pd.DataFrame, target: str, test_size: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffled, stratified, seeded split (the shipping file is ordered by outcome)."""
    train, test = train_test_split(
        df, test_size=test_size, random_state=seed, shuffle=True, stratify=df[target]
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def fingerprint(df: pd.DataFrame) -> str:
    """Order-sensitive content hash of a frame (columns, dtypes and values)."""
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(",".join(map(str, df.dtypes)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def apply_row_filter(df: pd.DataFrame, row_filter: str | None, path: Path) -> pd.DataFrame:
    """Keep the rows matching a pandas query (e.g. one segment); an error names the filter."""
    if not row_filter:
        return df
    try:
        out = df.query(row_filter)
    except Exception as exc:  # pandas raises many types for a bad expression
        raise DatasetError(
            f"row_filter {row_filter!r} cannot be applied to {path}: {exc}"
        ) from None
    if out.empty:
        raise DatasetError(f"row_filter {row_filter!r} selects no rows of {path}")
    return out.reset_index(drop=True)


def seeded_split(
    df: pd.DataFrame, target: str, test_size: float, seed: int, kind: str = "classification"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The kind's train/test split: stratified for classification, shuffled for regression."""
    if kind != "regression":
        return stratified_split(df, target, test_size, seed)
    train, test = train_test_split(df, test_size=test_size, random_state=seed, shuffle=True)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def split_extra(
    extra: pd.DataFrame, target: str, test_size: float, seed: int, kind: str = "classification"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded split of extra labelled rows; stratified when both classes have two rows."""
    counts = extra[target].value_counts()
    if len(extra) < 10:
        return extra, extra.iloc[0:0]
    if kind == "regression":
        return seeded_split(extra, target, test_size, seed, kind)
    if len(counts) == 2 and counts.min() >= 2:
        return stratified_split(extra, target, test_size, seed)
    shuffled = extra.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_test = int(round(len(shuffled) * test_size))
    return shuffled.iloc[n_test:], shuffled.iloc[:n_test]


@dataclass(frozen=True)
class TrainEvalSplit:
    train: pd.DataFrame
    test: pd.DataFrame
    source: str


def split_with_extra(
    spec: TabularDatasetSpec,
    row_filter: str | None,
    test_size: float,
    seed: int,
    data_dir: Path,
    extra_data: str | Path | None = None,
    kind: str = "classification",
    policy: Any = None,
    report: dict[str, int] | None = None,
) -> TrainEvalSplit:
    """The training/evaluation split used by training and by the gate (the same rows for both):
    the spec's file (optionally filtered), plus extra labelled rows split the same way."""
    df, path = load_tabular(spec, data_dir, kind, policy, report)
    df = apply_row_filter(df, row_filter, path)
    train, test = seeded_split(df, spec.target, test_size, seed, kind)
    source = str(path)
    if extra_data:
        extra_path = Path(extra_data)
        fmt = "parquet" if extra_path.suffix == ".parquet" else "csv"
        extra = validate_tabular(
            read_table(extra_path, fmt, spec.encoding), spec, extra_path, kind, policy, report
        )
        extra_train, extra_test = split_extra(extra, spec.target, test_size, seed, kind)
        train = pd.concat([train, extra_train[train.columns]], ignore_index=True)
        test = pd.concat([test, extra_test[test.columns]], ignore_index=True)
        source = f"{path}+{extra_path}"
    return TrainEvalSplit(train, test, source)


def load_actuals(
    spec: TimeSeriesDatasetSpec, path: str | Path, negative_target: str = "error"
) -> pd.DataFrame:
    """Realised actuals dropped by the user: a CSV/Parquet in the data set's own columns
    (time column, series keys, target, regressors), validated like the data set."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"actuals file {p} not found")
    df = read_table(p, p.suffix.lstrip(".").lower() or spec.format, spec.encoding)
    return validate_timeseries(df, spec, p, negative_target)


def cut_and_extend(
    df: pd.DataFrame,
    spec: TimeSeriesDatasetSpec,
    train_end: pd.Timestamp | None,
    actuals: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rows up to ``train_end`` (all when None) plus the ``actuals`` (which win on the same
    series and date). A gap between the two is left for the panel's gap handling to report."""
    out = df if train_end is None else df[df[spec.time_column] <= pd.Timestamp(train_end)]
    if actuals is not None and len(actuals):
        cols = [spec.time_column, *spec.series_keys, spec.target, *spec.regressors]
        out = pd.concat([out[cols], actuals[cols]], ignore_index=True)
        out = out.drop_duplicates([*spec.series_keys, spec.time_column], keep="last")
        logger.info(
            "training data extended with %s actuals up to %s",
            len(actuals),
            actuals[spec.time_column].max().date(),
        )
    return out.reset_index(drop=True)
