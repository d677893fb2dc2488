"""Tabular models (classification and regression): one scikit-learn pipeline per candidate
family (encoding, imputation where the family needs it, the estimator), cross-validation on
folds every family shares, and severity bands for probabilities."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from shelfwise.configs.datasets import TabularDatasetSpec
from shelfwise.configs.tabular_training import (
    LogisticParams,
    RandomForestParams,
    RidgeParams,
    SeverityBands,
    XGBoostParams,
)
from shelfwise.models.metrics import kind_metrics

logger = logging.getLogger(__name__)

SEVERITIES = ("critical", "warning", "info", "none")
CLASSIFICATION = "classification"
REGRESSION = "regression"
TABULAR_KINDS = (CLASSIFICATION, REGRESSION)
# families that handle missing numeric values themselves (kept as NaN unless imputing for all)
NAN_NATIVE = {"xgboost"}
# families whose numeric inputs are standardised
SCALED = {"logistic", "ridge"}
FAMILIES: dict[str, tuple[str, ...]] = {
    CLASSIFICATION: ("logistic", "random_forest", "xgboost"),
    REGRESSION: ("ridge", "random_forest", "xgboost"),
}


def _encoder(spec: TabularDatasetSpec, scale_numeric: bool, impute: bool = False) -> Any:
    steps: list[tuple[str, Any]] = []
    if impute:
        steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
    if scale_numeric:
        steps.append(("scale", StandardScaler()))
    numeric: Any = "passthrough"
    if len(steps) == 1:
        numeric = steps[0][1]
    elif steps:
        numeric = Pipeline(steps)
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


def needs_imputation(family: str, missing: str = "keep") -> bool:
    """``missing: impute`` imputes for every family; ``keep`` only for those without NaN
    support (linear models, scikit-learn's forests); ``error`` never sees a NaN."""
    if missing == "impute":
        return True
    if missing == "error":
        return False
    return family not in NAN_NATIVE


def build_xgb_pipeline(
    spec: TabularDatasetSpec,
    params: XGBoostParams,
    seed: int = 42,
    kind: str = CLASSIFICATION,
    impute: bool = False,
) -> Pipeline:
    if kind == REGRESSION:
        model: Any = XGBRegressor(**params.as_kwargs(), random_state=seed, tree_method="hist")
    else:
        model = XGBClassifier(
            **params.as_kwargs(), random_state=seed, eval_metric="logloss", tree_method="hist"
        )
    return Pipeline([("encode", _encoder(spec, False, impute)), ("model", model)])


def build_pipeline(
    family: str,
    spec: TabularDatasetSpec,
    params: Any,
    seed: int = 42,
    kind: str = CLASSIFICATION,
    missing: str = "keep",
) -> Pipeline:
    """The pipeline of one candidate family for ``kind`` (same encoder for every family, with
    a median imputer where ``needs_imputation``)."""
    if kind not in TABULAR_KINDS:
        raise ValueError(f"kind {kind!r} is not tabular ({TABULAR_KINDS})")
    if family not in FAMILIES[kind]:
        raise ValueError(f"{family!r} is not a {kind} family (known: {FAMILIES[kind]})")
    impute = needs_imputation(family, missing)
    if family == "xgboost":
        return build_xgb_pipeline(spec, params, seed, kind, impute)
    model: Any
    if family == "logistic":
        p: LogisticParams = params
        model = LogisticRegression(**p.as_kwargs(), random_state=seed)
    elif family == "ridge":
        r: RidgeParams = params
        model = Ridge(**r.as_kwargs())
    else:
        f: RandomForestParams = params
        cls = RandomForestRegressor if kind == REGRESSION else RandomForestClassifier
        model = cls(**f.as_kwargs(), random_state=seed)
    encoder = _encoder(spec, scale_numeric=family in SCALED, impute=impute)
    return Pipeline([("encode", encoder), ("model", model)])


def features_and_target(
    df: pd.DataFrame, spec: TabularDatasetSpec, kind: str = CLASSIFICATION
) -> tuple[pd.DataFrame, np.ndarray]:
    y = df[spec.target].to_numpy()
    return df[spec.features], (y.astype(float) if kind == REGRESSION else y.astype(int))


def predict(pipe: Pipeline, X: pd.DataFrame, kind: str = CLASSIFICATION) -> np.ndarray:
    """What the kind scores: positive-class probabilities, or the predicted values."""
    if kind == REGRESSION:
        return np.asarray(pipe.predict(X), dtype=float)
    return np.asarray(pipe.predict_proba(X))[:, 1]


@dataclass(frozen=True)
class CVResult:
    fold_scores: list[float]  # the selection metric per fold
    fold_metrics: list[dict[str, float]] = field(default_factory=list)  # every metric per fold

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_scores))

    def summary(self) -> dict[str, float]:
        """``cv_<metric>_mean`` and ``cv_<metric>_std`` of every metric."""
        out: dict[str, float] = {}
        for name in self.fold_metrics[0] if self.fold_metrics else []:
            values = [m[name] for m in self.fold_metrics]
            out[f"cv_{name}_mean"] = float(np.mean(values))
            out[f"cv_{name}_std"] = float(np.std(values))
        return out


def cv_splitter(kind: str, folds: int, seed: int) -> StratifiedKFold | KFold:
    """The folds every candidate of a task shares (stratified for classification)."""
    if kind == REGRESSION:
        return KFold(n_splits=folds, shuffle=True, random_state=seed)
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def cross_validate(
    make_pipeline: Callable[[], Pipeline],
    X: pd.DataFrame,
    y: np.ndarray,
    folds: int,
    seed: int,
    kind: str = CLASSIFICATION,
    metric: str = "roc_auc",
    on_fold: Callable[[int, float], None] | None = None,
) -> CVResult:
    """K-fold CV of the kind's metrics; ``on_fold(i, score)`` sees each fold's ``metric``
    (progress, pruning)."""
    scores: list[float] = []
    per_fold: list[dict[str, float]] = []
    for i, (tr, va) in enumerate(cv_splitter(kind, folds, seed).split(X, y)):
        pipe = make_pipeline()
        pipe.fit(X.iloc[tr], y[tr])
        m = kind_metrics(kind, y[va], predict(pipe, X.iloc[va], kind))
        if metric not in m:
            raise ValueError(f"metric {metric!r} is not a {kind} metric (have {sorted(m)})")
        per_fold.append(m)
        scores.append(m[metric])
        if on_fold is not None:
            on_fold(i, m[metric])
    return CVResult(scores, per_fold)


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
    """Importance of the fitted trees (or |coef| of a linear model) by encoded feature."""
    names = list(pipe.named_steps["encode"].get_feature_names_out())
    model = pipe.named_steps["model"]
    if hasattr(model, "feature_importances_"):
        values = model.feature_importances_
    else:
        values = np.abs(model.coef_).ravel()
    return pd.Series(values, index=names).sort_values(ascending=False)
