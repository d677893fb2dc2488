"""Data and prediction drift with Evidently, reduced to the numbers the retrain policy needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import ValueDrift
from evidently.presets import DataDriftPreset

from shelfwise.configs.monitoring import DriftConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftSummary:
    n_reference: int
    n_current: int
    scores: dict[str, float]
    drifted_columns: list[str]
    share: float
    prediction_score: float | None = None
    prediction_drifted: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float]:
        out = {"drift_share": self.share, "drifted_columns": float(len(self.drifted_columns))}
        if self.prediction_score is not None:
            out["prediction_drift_score"] = self.prediction_score
        out.update({f"drift_score.{k}": v for k, v in self.scores.items()})
        return out


def _dataset(df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> Dataset:
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    return Dataset.from_pandas(df[[*numeric, *categorical]].copy(), data_definition=definition)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    cfg: DriftConfig,
    prediction_column: str | None = None,
) -> tuple[Snapshot, DriftSummary]:
    """Per-feature drift (explicit tests from config) plus drift of the prediction column."""
    if reference.empty or current.empty:
        raise ValueError("drift needs non-empty reference and current data")
    num = list(numeric)
    has_pred = (
        bool(prediction_column)
        and prediction_column in reference
        and (prediction_column in current)
    )
    if has_pred:
        num = [*num, prediction_column]
    metrics: list = [
        DataDriftPreset(
            columns=[*numeric, *categorical],
            num_method=cfg.num_method,
            cat_method=cfg.cat_method,
            threshold=cfg.threshold,
        )
    ]
    if has_pred:
        metrics.append(
            ValueDrift(
                column=prediction_column,
                method=cfg.prediction_method,
                threshold=cfg.prediction_threshold,
            )
        )
    snapshot = Report(metrics).run(
        current_data=_dataset(current, num, categorical),
        reference_data=_dataset(reference, num, categorical),
    )
    return snapshot, summarise(
        snapshot, [*numeric, *categorical], cfg, prediction_column, len(reference), len(current)
    )


def summarise(
    snapshot: Snapshot,
    features: list[str],
    cfg: DriftConfig,
    prediction_column: str | None,
    n_reference: int,
    n_current: int,
) -> DriftSummary:
    scores: dict[str, float] = {}
    prediction_score = None
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type") != "evidently:metric_v2:ValueDrift":
            continue
        column = config["column"]
        value = float(metric["value"])
        if column == prediction_column:
            prediction_score = value
        elif column in features:
            scores[column] = value
    drifted = [c for c in features if scores.get(c, 0.0) >= cfg.threshold]
    share = len(drifted) / len(features) if features else 0.0
    return DriftSummary(
        n_reference=n_reference,
        n_current=n_current,
        scores=scores,
        drifted_columns=drifted,
        share=share,
        prediction_score=prediction_score,
        prediction_drifted=prediction_score is not None
        and prediction_score >= cfg.prediction_threshold,
        thresholds={"feature": cfg.threshold, "prediction": cfg.prediction_threshold},
    )
