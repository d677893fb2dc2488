"""Resolve a registry alias and load that version for serving (no global tracking URI is set).

``resolve_alias`` answers which version an alias points at (None when the model or alias does
not exist yet). ``load_tabular_model`` downloads one version of a classification or regression
task, loads the scikit-learn pipeline, builds the fast path for classifiers
(models/fast_tabular.py), checks it against the pipeline on probe rows and warms it; the result
is an immutable object that serving swaps in with one assignment.
``load_forecast_model`` does the same for a forecast task's pyfunc: it precomputes the fitted
window of every series (a request is then a lookup) and carries the version's gate metrics.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from shelfwise.configs.tabular_training import SeverityBands
from shelfwise.models.fast_tabular import (
    FastTabularPredictor,
    UnsupportedPipeline,
    build_fast_predictor,
    max_abs_difference,
    probe_frame,
)
from shelfwise.models.tabular import severity

logger = logging.getLogger(__name__)

FAST_PATH_TOLERANCE = 1e-6
_ABSENT_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


class ModelLoadError(RuntimeError):
    """A registered version could not be loaded or failed its checks. Names model and version."""


def registry_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    """Version number ``name@alias`` points at, or None when the model or alias is absent.

    Any other failure (server unreachable, ...) raises.
    """
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in _ABSENT_CODES:
            return None
        raise


def download_version(
    client: MlflowClient, tracking_uri: str, name: str, version: str, dst: str
) -> str:
    """Download one version's files through the tracking server (``models:/`` URIs would go
    through the process-global registry URI, which serving never sets)."""
    import mlflow.artifacts

    uri = client.get_model_version_download_uri(name, version)
    return mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=dst, tracking_uri=tracking_uri
    )


TABULAR_KINDS = ("classification", "regression")


@dataclass(frozen=True)
class LoadedTabularModel:
    """One registered version of a tabular task (a scikit-learn pipeline), loaded, checked and
    warm. ``kind`` classification: predictions are the positive class's probability (through the
    fast path when the pipeline allows it); regression: the pipeline's predictions. Never mutated
    after load."""

    registered_name: str
    version: str
    run_id: str | None
    loaded_at: datetime
    kind: str
    pipeline: Any
    fast: FastTabularPredictor | None
    fast_path_note: str
    input_columns: tuple[str, ...]
    bands: SeverityBands | None = None  # classification: severity bands
    categorical: frozenset[str] = frozenset()  # input columns the pipeline encodes as categories

    @property
    def uses_fast_path(self) -> bool:
        return self.fast is not None

    def frame(self, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame(list(rows), columns=list(self.input_columns))
        for column in frame.columns[frame.isna().any()]:  # None -> NaN of the column's kind
            if column in self.categorical:
                frame[column] = frame[column].astype(object).where(frame[column].notna(), np.nan)
            else:
                frame[column] = pd.to_numeric(frame[column])
        return frame

    def predict_one(self, row: Mapping[str, Any]) -> float:
        if self.fast is not None and not _has_missing(row):
            return self.fast.predict_one(row)
        return float(self.predict_many([row])[0])

    def predict_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if self.fast is not None and not any(_has_missing(r) for r in rows):
            return self.fast.predict_many(rows)
        return self.predict_frame(self.frame(rows))

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Through the pipeline itself (explanations and rows with missing values)."""
        if self.kind == "classification":
            return np.asarray(self.pipeline.predict_proba(frame))[:, 1].astype(np.float64)
        return np.asarray(self.pipeline.predict(frame), dtype=np.float64).reshape(len(frame))

    def severity(self, probability: float) -> str | None:
        return severity(probability, self.bands) if self.bands is not None else None


def categorical_columns(pipeline: Any) -> frozenset[str]:
    """Input columns that the pipeline's first ColumnTransformer sends to a category encoder
    (one-hot / ordinal, also inside a nested Pipeline)."""
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    steps = getattr(pipeline, "steps", None) or []
    encoder = steps[0][1] if steps else None
    out: set[str] = set()
    for _name, transformer, cols in getattr(encoder, "transformers_", []):
        parts = [s for _, s in getattr(transformer, "steps", [])] or [transformer]
        if any(isinstance(t, OneHotEncoder | OrdinalEncoder) for t in parts):
            out.update([cols] if isinstance(cols, str) else [str(c) for c in cols])
    return frozenset(out)


def _has_missing(row: Mapping[str, Any]) -> bool:
    return any(v is None for v in row.values())


def prepare_tabular_model(
    pipeline: Any,
    registered_name: str,
    version: str,
    kind: str = "classification",
    bands: SeverityBands | None = None,
    run_id: str | None = None,
) -> LoadedTabularModel:
    """Classification: build and verify the fast path for a loaded pipeline; fall back to the
    pipeline if the fast path is unsupported or disagrees with it beyond 1e-6 on probe rows.
    Regression: the pipeline answers (the fast path reproduces probabilities only)."""
    if kind not in TABULAR_KINDS:
        raise ModelLoadError(f"{registered_name} v{version}: kind {kind!r} is not tabular")
    fast: FastTabularPredictor | None = None
    note = "pipeline path: regression (the fast path reproduces probabilities only)"
    if kind == "classification":
        try:
            fast = build_fast_predictor(pipeline)
        except UnsupportedPipeline as exc:
            fast, note = None, f"pipeline path: {exc}"
    if fast is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # probe rows include unknown categories on purpose
            diff = max_abs_difference(fast, pipeline, probe_frame(fast))
        if diff > FAST_PATH_TOLERANCE:
            note = f"pipeline path: fast path differs by {diff:.3g} on probe rows"
            fast = None
        else:
            note = f"fast path (max |diff| {diff:.1e} on probe rows)"
    if fast is not None:
        columns = fast.input_columns
    else:
        columns = tuple(str(c) for c in getattr(pipeline, "feature_names_in_", ()))
        if not columns:
            raise ModelLoadError(f"{registered_name} v{version}: pipeline has no input columns")
    loaded = LoadedTabularModel(
        registered_name=registered_name,
        version=str(version),
        run_id=run_id,
        loaded_at=datetime.now(UTC),
        kind=kind,
        pipeline=pipeline,
        fast=fast,
        fast_path_note=note,
        input_columns=columns,
        bands=bands if kind == "classification" else None,
        categorical=categorical_columns(pipeline),
    )
    _warm(loaded)
    if fast is None and kind == "classification":
        logger.warning("%s v%s served through the slow %s", registered_name, version, note)
    return loaded


def _warm(model: LoadedTabularModel) -> None:
    """First calls allocate and compile: pay for them before the model sees traffic."""
    if model.fast is not None:
        probe = probe_frame(model.fast, n=8).to_dict("records")
    else:
        return
    for _ in range(3):
        model.predict_one(probe[0])
        model.predict_many(probe)


def load_tabular_model(
    tracking_uri: str,
    registered_name: str,
    version: str,
    kind: str = "classification",
    bands: SeverityBands | None = None,
) -> LoadedTabularModel:
    """Download, load, verify and warm ``registered_name`` version ``version`` (a scikit-learn
    pipeline; classification needs ``predict_proba``)."""
    import mlflow.sklearn

    client = registry_client(tracking_uri)
    try:
        mv = client.get_model_version(registered_name, str(version))
        with tempfile.TemporaryDirectory(prefix="shelfwise-model-") as tmp:
            local = download_version(client, tracking_uri, registered_name, str(version), tmp)
            pipeline = mlflow.sklearn.load_model(local)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load {registered_name} version {version}: {type(exc).__name__}: {exc}"
        ) from exc
    needed = "predict_proba" if kind == "classification" else "predict"
    if not hasattr(pipeline, needed):
        raise ModelLoadError(
            f"{registered_name} version {version} is a {type(pipeline).__name__} without "
            f"{needed} (a {kind} task needs it)"
        )
    try:
        return prepare_tabular_model(
            pipeline, registered_name, str(version), kind, bands, mv.run_id
        )
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{registered_name} version {version} failed its warm-up: {type(exc).__name__}: {exc}"
        ) from exc


# --------------------------------------------------------------------------- demand forecast


@dataclass(frozen=True)
class LoadedForecastModel:
    """One registered demand-forecast version (the hybrid pyfunc), loaded with its whole forecast
    window precomputed, plus the metrics it was gated on. Never mutated after load."""

    registered_name: str
    version: str
    run_id: str | None
    loaded_at: datetime
    model: Any  # models.forecast.HybridProphetXGBoost (or another _GlobalForecaster)
    key_columns: tuple[str, ...]
    integer_keys: frozenset[str]  # key columns whose values are integers (else strings)
    series: frozenset[tuple[Any, ...]]  # every series' key values, in key_columns order
    horizon: int
    frequency: str
    interval_level: float | None  # None: the version has no calibrated intervals
    gate_metrics: dict[str, float]
    fast_path_note: str

    def forecast(self, keys: Mapping[str, Any], horizon: int) -> pd.DataFrame:
        """date, key columns, yhat, yhat_lower, yhat_upper for the next ``horizon`` periods of
        one series: exactly what the registered pyfunc answers for that request."""
        from shelfwise.registry.forecast_model import forecast

        request = pd.DataFrame({k: [keys[k]] for k in self.key_columns}).assign(horizon=horizon)
        return forecast(self.model, request)


def prepare_forecast_model(
    model: Any,
    registered_name: str,
    version: str,
    gate_metrics: Mapping[str, float] | None = None,
    run_id: str | None = None,
) -> LoadedForecastModel:
    """Precompute the forecast window, describe the series keys and warm the request path."""
    keys = getattr(model, "keys", None)
    if keys is None or getattr(model, "future", None) is None:
        raise ModelLoadError(f"{registered_name} v{version}: the forecaster is not fitted")
    columns = tuple(model.key_columns)
    table = model.precompute()
    calibration = model.calibration
    loaded = LoadedForecastModel(
        registered_name=registered_name,
        version=str(version),
        run_id=run_id,
        loaded_at=datetime.now(UTC),
        model=model,
        key_columns=columns,
        integer_keys=frozenset(c for c in columns if pd.api.types.is_integer_dtype(keys[c])),
        series=frozenset(keys[list(columns)].itertuples(index=False, name=None)),
        horizon=int(model.cfg.horizon),
        frequency=str(model.frequency),
        interval_level=float(calibration.level) if calibration is not None else None,
        gate_metrics={k: v for k, v in (gate_metrics or {}).items() if np.isfinite(v)},
        fast_path_note=(
            f"precomputed window: {len(keys)} series x {model.cfg.horizon} periods "
            f"({len(table)} rows)"
        ),
    )
    first = dict(zip(columns, next(iter(keys[list(columns)].itertuples(index=False))), strict=True))
    for _ in range(3):  # first calls allocate: pay for them before the model sees traffic
        loaded.forecast(first, loaded.horizon)
    return loaded


def load_forecast_model(
    tracking_uri: str, registered_name: str, version: str
) -> LoadedForecastModel:
    """Download, load (the pyfunc: the fitted hybrid inside it), precompute and warm
    ``registered_name`` version ``version``; its ``metric.*`` tags are the gate metrics."""
    from shelfwise.registry.forecast_model import ForecastModel
    from shelfwise.registry.model_code import load_local_pyfunc
    from shelfwise.registry.reference import gate_metrics

    client = registry_client(tracking_uri)
    try:
        mv = client.get_model_version(registered_name, str(version))
        with tempfile.TemporaryDirectory(prefix="shelfwise-model-") as tmp:
            local = download_version(client, tracking_uri, registered_name, str(version), tmp)
            pyfunc = load_local_pyfunc(local)
        python_model = pyfunc.unwrap_python_model()
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load {registered_name} version {version}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(python_model, ForecastModel):
        raise ModelLoadError(
            f"{registered_name} version {version} is a {type(python_model).__name__}, not the "
            "forecast pyfunc (registry/forecast_model.py)"
        )
    try:
        return prepare_forecast_model(
            python_model.model, registered_name, str(version), gate_metrics(mv.tags), mv.run_id
        )
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{registered_name} version {version} failed its warm-up: {type(exc).__name__}: {exc}"
        ) from exc
