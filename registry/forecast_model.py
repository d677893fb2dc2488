"""A fitted forecaster of any family as one MLflow pyfunc: seasonal naive, Prophet alone, the
global XGBoost alone, the hybrid, or one of them with the declared fallback for short series
(``models.forecast.FallbackForecaster``). One registered version is a whole forecaster: its
precomputed future (Prophet's components for the hybrid), any booster, each series' recent
history and the interval calibration. ``predict`` is the same for every family.

The version is self-contained (registry/model_code.py): it carries the Shelfwise modules the
wrapper and the fitted forecaster need (MLflow ``code_paths``) and pinned requirements for the
rest, so it loads in an environment built from its own ``requirements.txt``.

Input: the series key columns plus either ``horizon`` (the next N periods after the training
data) or ``date`` (one period) per row. Output: ``date``, the key columns, ``yhat``,
``yhat_lower``, ``yhat_upper``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import ColSpec, Schema

from shelfwise.models.forecast import FallbackForecaster, _Forecaster
from shelfwise.registry.model_code import model_code

logger = logging.getLogger(__name__)

ARTIFACT_KEY = "forecaster"
Forecaster = _Forecaster | FallbackForecaster


def expand_request(model: Forecaster, request: pd.DataFrame) -> pd.DataFrame:
    """Rows of key columns + ``horizon`` or ``date`` -> rows of key columns + ``ds``."""
    keys = model.key_columns
    missing = [k for k in keys if k not in request.columns]
    if missing:
        raise ValueError(f"forecast request lacks key column(s) {missing}")
    has_date = "date" in request.columns
    has_h = "horizon" in request.columns
    if not (has_date or has_h):
        raise ValueError("forecast request needs a 'horizon' or a 'date' column")
    parts = []
    dated = request["date"].notna() if has_date else pd.Series(False, index=request.index)
    if dated.any():
        parts.append(request.loc[dated, keys].assign(ds=pd.to_datetime(request.loc[dated, "date"])))
    rest = request.loc[~dated]
    if len(rest):
        if not has_h or rest["horizon"].isna().any():
            raise ValueError("each request row needs a 'date' or a 'horizon'")
        h = rest["horizon"].astype(int)
        if (h < 1).any() or (h > model.cfg.horizon).any():
            raise ValueError(f"horizon must be between 1 and {model.cfg.horizon}")
        assert model.future is not None and model.keys is not None
        want = rest[keys].assign(horizon=h.to_numpy()).merge(model.keys, on=keys, how="left")
        if want["sid"].isna().any():
            row = want[want["sid"].isna()].iloc[0]
            label = ", ".join(f"{k}={row[k]}" for k in keys)
            raise ValueError(f"unknown series ({label}): not in the training data")
        want["sid"] = want["sid"].astype(int)
        fut = model.future.loc[model.future["sid"].isin(want["sid"]), ["sid", "ds"]]
        fut = fut.assign(step=fut.groupby("sid").cumcount() + 1)  # only the requested series
        rows = want.merge(fut, on="sid")
        rows = rows[rows["step"] <= rows["horizon"]]
        parts.append(rows[[*keys, "ds"]])
    return pd.concat(parts, ignore_index=True)


def forecast(model: Forecaster, request: pd.DataFrame) -> pd.DataFrame:
    out = model.predict(expand_request(model, request))
    out = out.rename(columns={"ds": "date"})
    return out[["date", *model.key_columns, "yhat", "yhat_lower", "yhat_upper"]]


class ForecastModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict`` answers key columns + horizon/date requests."""

    def load_context(self, context) -> None:
        self.model: Forecaster = joblib.load(context.artifacts[ARTIFACT_KEY])
        self.model.precompute()  # the whole window once: a request is then a lookup

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return forecast(self.model, model_input)


def _col_type(dtype) -> str:
    if pd.api.types.is_integer_dtype(dtype):
        return "long"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    return "string"


def forecast_signature(model: Forecaster) -> ModelSignature:
    assert model.keys is not None
    keys = [ColSpec(_col_type(model.keys[k].dtype), k) for k in model.key_columns]
    inputs = Schema(
        [
            *keys,
            ColSpec("long", "horizon", required=False),
            ColSpec("datetime", "date", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("datetime", "date"),
            *keys,
            ColSpec("double", "yhat"),
            ColSpec("double", "yhat_lower"),
            ColSpec("double", "yhat_upper"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(model: Forecaster, n_series: int = 2, horizon: int = 7) -> pd.DataFrame:
    assert model.keys is not None
    ex = model.keys.head(n_series)[model.key_columns].copy()
    ex["horizon"] = np.int64(min(horizon, model.cfg.horizon))
    return ex.reset_index(drop=True)


@contextmanager
def _pyfunc_kwargs(model: Forecaster) -> Iterator[dict[str, Any]]:
    """Everything ``log_model``/``save_model`` need, valid inside the block: the dumped
    forecaster, its code (``code_paths``), pinned requirements, signature and input example."""
    python_model = ForecastModel()
    with tempfile.TemporaryDirectory() as tmp, model_code([python_model, model]) as code:
        path = Path(tmp) / "forecaster.joblib"
        joblib.dump(model, path, compress=3)
        logger.info(
            "logging the %s forecaster pyfunc (%.1f MB)", model.family, path.stat().st_size / 1e6
        )
        yield {
            "python_model": python_model,
            "artifacts": {ARTIFACT_KEY: str(path)},
            "code_paths": code.code_paths,
            "pip_requirements": code.requirements,
            "signature": forecast_signature(model),
            "input_example": input_example(model),
        }


def log_forecast_model(model: Forecaster, name: str = "model") -> ModelInfo:
    """Log the fitted forecaster as a self-contained pyfunc (in the active run) with signature and
    input example."""
    with _pyfunc_kwargs(model) as kwargs:
        return mlflow.pyfunc.log_model(name=name, **kwargs)


def save_forecast_model(model: Forecaster, path: str | Path) -> None:
    """Save the pyfunc to a local directory (benchmarks; the flow logs to the registry)."""
    with _pyfunc_kwargs(model) as kwargs:
        mlflow.pyfunc.save_model(str(path), **kwargs)
