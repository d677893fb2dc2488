"""Evaluation figures (matplotlib, headless). Each function returns a Figure; callers log it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve  # noqa: E402


def roc_figure(y: np.ndarray, proba: np.ndarray, label: str) -> Figure:
    fpr, tpr, _ = roc_curve(y, proba)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    return fig


def pr_figure(y: np.ndarray, proba: np.ndarray, label: str) -> Figure:
    prec, rec, _ = precision_recall_curve(y, proba)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(rec, prec, label=label)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend(loc="lower left")
    return fig


def calibration_figure(y: np.ndarray, proba: np.ndarray, label: str, bins: int = 10) -> Figure:
    frac, mean_pred = calibration_curve(y, proba, n_bins=bins, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(mean_pred, frac, "o-", label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed late rate", title="Calibration")
    ax.legend(loc="upper left")
    return fig


def confusion_figure(y: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> Figure:
    cm = confusion_matrix(y, (proba >= threshold).astype(int), labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["on time", "late"],
        yticklabels=["on time", "late"],
        xlabel="predicted",
        ylabel="actual",
        title=f"Confusion matrix (threshold {threshold})",
    )
    return fig


def predicted_vs_actual_figure(y: np.ndarray, pred: np.ndarray, label: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, pred, s=6, alpha=0.4, label=label)
    lo, hi = float(np.min([np.min(y), np.min(pred)])), float(np.max([np.max(y), np.max(pred)]))
    ax.plot([lo, hi], [lo, hi], "--", color="grey")
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual")
    ax.legend(loc="upper left")
    return fig


def residual_figure(y: np.ndarray, pred: np.ndarray, label: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(pred, np.asarray(y) - np.asarray(pred), s=6, alpha=0.4, label=label)
    ax.axhline(0.0, ls="--", color="grey")
    ax.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals")
    ax.legend(loc="upper left")
    return fig


def importance_figure(importance: pd.Series, top: int = 20) -> Figure:
    imp = importance.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(imp) + 1))
    ax.barh(imp.index, imp.values)
    ax.set(title="Feature importance", xlabel="importance")
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)


def forecast_figure(
    history: pd.DataFrame, forecasts: pd.DataFrame, title: str, history_periods: int = 180
) -> Figure:
    """Actuals (history tail + test) against each family's forecast for one series.

    history: ds, y; forecasts: family, ds, y, yhat[, yhat_lower, yhat_upper]."""
    fig, ax = plt.subplots(figsize=(10, 4))
    tail = history.tail(history_periods)
    truth = pd.concat([tail[["ds", "y"]], forecasts[["ds", "y"]].drop_duplicates("ds")])
    ax.plot(truth["ds"], truth["y"], color="black", lw=1, label="actual")
    for fam, g in forecasts.groupby("family", sort=True):
        ax.plot(g["ds"], g["yhat"], lw=1.2, label=fam)
        if fam == "hybrid" and "yhat_lower" in g and g["yhat_lower"].notna().any():
            ax.fill_between(g["ds"], g["yhat_lower"], g["yhat_upper"], alpha=0.2, label="interval")
    ax.set(title=title, xlabel="date", ylabel="demand")
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    fig.tight_layout()
    return fig
