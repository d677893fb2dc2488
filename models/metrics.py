"""Metrics shared by every model family, so MLflow's compare view lines runs up by name."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    roc_auc_score,
)

CLASSIFICATION_METRICS = ("roc_auc", "pr_auc", "accuracy", "f1", "brier", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
# metrics where a larger value is better (everything else: smaller is better)
HIGHER_IS_BETTER = {"roc_auc", "pr_auc", "accuracy", "f1", "coverage", "r2"}


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """ROC-AUC, PR-AUC, accuracy, F1, Brier score and log loss of positive-class probabilities."""
    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(proba, dtype=float), 1e-7, 1 - 1e-7)
    pred = (p >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }


def regression_metrics(y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² of predictions (R² of a constant equal to the mean of ``y_true``: 0)."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(pred, dtype=float)
    err = p - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": float(1.0 - np.sum(err**2) / ss_tot) if ss_tot > 0 else 0.0,
    }


def kind_metrics(kind: str, y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The metrics of a tabular kind, with the same names for every family: classification
    (of positive-class probabilities, ECE included) or regression."""
    if kind == "regression":
        return regression_metrics(y_true, pred)
    out = classification_metrics(y_true, pred)
    out["ece"] = expected_calibration_error(y_true, pred)
    return out


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean predicted| over equal-width probability bins."""
    y = np.asarray(y_true).astype(float)
    p = np.asarray(proba, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def business_cost(
    y_true: np.ndarray,
    proba: np.ndarray,
    threshold: float,
    cost_missed_late: float,
    cost_false_alarm: float,
) -> float:
    """Mean cost per order: a missed late delivery vs a false alarm at a decision threshold."""
    y = np.asarray(y_true).astype(int)
    pred = (np.asarray(proba) >= threshold).astype(int)
    missed = np.sum((y == 1) & (pred == 0))
    false_alarm = np.sum((y == 0) & (pred == 1))
    return float((missed * cost_missed_late + false_alarm * cost_false_alarm) / max(len(y), 1))
