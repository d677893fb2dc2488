"""Resolve a registry alias and load that version for serving (no global tracking URI is set).

``resolve_alias`` answers which version an alias points at (None when the model or alias does
not exist yet). ``load_delay_model`` downloads one version, loads the scikit-learn pipeline,
builds the fast path (models/fast_delay.py), checks it against the pipeline on probe rows and
warms it; the result is an immutable object that serving swaps in with one assignment.
``load_forecast_model`` does the same for the demand-forecast pyfunc: it precomputes the fitted
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

from shelfwise.configs.delay import SeverityBands
from shelfwise.models.delay import severity
from shelfwise.models.fast_delay import (
    FastDelayPredictor,
    UnsupportedPipeline,
    build_fast_predictor,
    max_abs_difference,
    probe_frame,
)

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


@dataclass(frozen=True)
class LoadedDelayModel:
    """One registered delay-risk version, loaded, checked and warm. Never mutated after load."""

    registered_name: str
    version: str
    run_id: str | None
    loaded_at: datetime
    pipeline: Any
    fast: FastDelayPredictor | None
    fast_path_note: str
    input_columns: tuple[str, ...]
    bands: SeverityBands

    @property
    def uses_fast_path(self) -> bool:
        return self.fast is not None

    def predict_one(self, row: Mapping[str, Any]) -> float:
        if self.fast is not None:
            return self.fast.predict_one(row)
        return float(self.predict_many([row])[0])

    def predict_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if self.fast is not None:
            return self.fast.predict_many(rows)
        frame = pd.DataFrame(list(rows), columns=list(self.input_columns))
        return np.asarray(self.pipeline.predict_proba(frame))[:, 1].astype(np.float64)

    def severity(self, probability: float) -> str:
        return severity(probability, self.bands)


def prepare_delay_model(
    pipeline: Any,
    registered_name: str,
    version: str,
    bands: SeverityBands,
    run_id: str | None = None,
) -> LoadedDelayModel:
    """Build and verify the fast path for a loaded pipeline; fall back to the pipeline if the fast
    path is unsupported or disagrees with it beyond 1e-6 on probe rows."""
    fast: FastDelayPredictor | None
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
    loaded = LoadedDelayModel(
        registered_name=registered_name,
        version=str(version),
        run_id=run_id,
        loaded_at=datetime.now(UTC),
        pipeline=pipeline,
        fast=fast,
        fast_path_note=note,
        input_columns=columns,
        bands=bands,
    )
    _warm(loaded)
    if fast is None:
        logger.warning("%s v%s served through the slow %s", registered_name, version, note)
    return loaded


def _warm(model: LoadedDelayModel) -> None:
    """First calls allocate and compile: pay for them before the model sees traffic."""
    if model.fast is not None:
        probe = probe_frame(model.fast, n=8).to_dict("records")
    else:
        return
    for _ in range(3):
        model.predict_one(probe[0])
        model.predict_many(probe)


def load_delay_model(
    tracking_uri: str, registered_name: str, version: str, bands: SeverityBands
) -> LoadedDelayModel:
    """Download, load, verify and warm ``registered_name`` version ``version``."""
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
    if not hasattr(pipeline, "predict_proba"):
        raise ModelLoadError(
            f"{registered_name} version {version} is a {type(pipeline).__name__} without "
            "predict_proba"
        )
    try:
        return prepare_delay_model(pipeline, registered_name, str(version), bands, mv.run_id)
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
