"""Delay-risk classifier: scikit-learn pipeline (one-hot encoding + XGBoost) and its baseline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from shelfwise.configs.datasets import TabularDatasetSpec
from shelfwise.configs.delay import BaselineParams, SeverityBands, XGBoostParams
from shelfwise.models.metrics import classification_metrics

logger = logging.getLogger(__name__)

SEVERITIES = ("critical", "warning", "info", "none")


def _encoder(spec: TabularDatasetSpec, scale_numeric: bool) -> ColumnTransformer:
    numeric = StandardScaler() if scale_numeric else "passthrough"
    return ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                spec.categorical,
            ),
            ("numeric", numeric, spec.numeric),
        ],
        verbose_feature_names_out=False,
    )


def build_xgb_pipeline(spec: TabularDatasetSpec, params: XGBoostParams, seed: int = 42) -> Pipeline:
    model = XGBClassifier(
        **params.as_kwargs(),
        random_state=seed,
        eval_metric="logloss",
        tree_method="hist",
    )
    return Pipeline([("encode", _encoder(spec, scale_numeric=False)), ("model", model)])


def build_baseline_pipeline(
    spec: TabularDatasetSpec, params: BaselineParams, seed: int = 42
) -> Pipeline:
    model = LogisticRegression(C=params.C, max_iter=params.max_iter, random_state=seed)
    return Pipeline([("encode", _encoder(spec, scale_numeric=True)), ("model", model)])


def features_and_target(
    df: pd.DataFrame, spec: TabularDatasetSpec
) -> tuple[pd.DataFrame, np.ndarray]:
    return df[spec.features], df[spec.target].to_numpy().astype(int)


@dataclass(frozen=True)
class CVResult:
    fold_scores: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_scores))


def cross_validate_auc(
    make_pipeline: Callable[[], Pipeline],
    X: pd.DataFrame,
    y: np.ndarray,
    folds: int,
    seed: int,
    on_fold: Callable[[int, float], None] | None = None,
) -> CVResult:
    """Stratified k-fold ROC-AUC; ``on_fold(i, auc)`` sees each fold (progress, pruning)."""
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores: list[float] = []
    for i, (tr, va) in enumerate(skf.split(X, y)):
        pipe = make_pipeline()
        pipe.fit(X.iloc[tr], y[tr])
        auc = classification_metrics(y[va], pipe.predict_proba(X.iloc[va])[:, 1])["roc_auc"]
        scores.append(auc)
        if on_fold is not None:
            on_fold(i, auc)
    return CVResult(scores)


def severity(probability: float, bands: SeverityBands) -> str:
    """critical > 0.7, warning > 0.5, info > 0.3, else none (thresholds from config)."""
    if probability > bands.critical:
        return "critical"
    if probability > bands.warning:
        return "warning"
    if probability > bands.info:
        return "info"
    return "none"


def severities(probabilities: np.ndarray, bands: SeverityBands) -> list[str]:
    return [severity(float(p), bands) for p in probabilities]


def feature_importance(pipe: Pipeline) -> pd.Series:
    """Gain-free importance of the fitted XGBoost (or |coef| of the baseline) by encoded feature."""
    names = list(pipe.named_steps["encode"].get_feature_names_out())
    model = pipe.named_steps["model"]
    if hasattr(model, "feature_importances_"):
        values = model.feature_importances_
    else:
        values = np.abs(model.coef_).ravel()
    return pd.Series(values, index=names).sort_values(ascending=False)
