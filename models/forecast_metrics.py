"""Forecast accuracy metrics. Names match across model families (smape, mase, mae, rmse,
coverage) so MLflow's compare view lines the runs up."""

from __future__ import annotations

import numpy as np
import pandas as pd

FORECAST_METRICS = ("smape", "mase", "mae", "rmse", "coverage")


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200); a period where both are 0 counts as 0 error."""
    y, yhat = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    denom = np.abs(y) + np.abs(yhat)
    terms = np.where(denom == 0, 0.0, 2.0 * np.abs(y - yhat) / np.where(denom == 0, 1.0, denom))
    return float(100.0 * terms.mean())


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, dtype=float) - np.asarray(yhat, dtype=float))))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    d = np.asarray(y, dtype=float) - np.asarray(yhat, dtype=float)
    return float(np.sqrt(np.mean(d * d)))


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actuals inside [lower, upper]; NaN when there are no intervals."""
    y, lo, hi = (np.asarray(a, dtype=float) for a in (y, lower, upper))
    ok = ~(np.isnan(lo) | np.isnan(hi))
    if not ok.any():
        return float("nan")
    return float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok])))


def mase_scale(history: np.ndarray, period: int) -> float:
    """In-sample mean absolute error of the seasonal naive forecast with ``period``."""
    h = np.asarray(history, dtype=float)
    if len(h) <= period:
        return float("nan")
    return float(np.mean(np.abs(h[period:] - h[:-period])))


def mase_scales(history: pd.DataFrame, period: int) -> pd.Series:
    """Per-series MASE scale from training rows (sid, ds, y)."""
    return (
        history.sort_values(["sid", "ds"])
        .groupby("sid")["y"]
        .apply(lambda s: mase_scale(s.to_numpy(), period))
    )


def point_metrics(
    y: np.ndarray,
    yhat: np.ndarray,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    scale: float | None = None,
) -> dict[str, float]:
    """All metrics for one set of forecasts (one series, or pooled)."""
    nan = np.full(len(y), np.nan)
    m = mae(y, yhat)
    return {
        "smape": smape(y, yhat),
        "mase": m / scale if scale and np.isfinite(scale) and scale > 0 else float("nan"),
        "mae": m,
        "rmse": rmse(y, yhat),
        "coverage": coverage(y, nan if lower is None else lower, nan if upper is None else upper),
    }


def metrics_by_series(forecasts: pd.DataFrame, scales: pd.Series) -> pd.DataFrame:
    """forecasts: sid, y, yhat, yhat_lower, yhat_upper -> one row of metrics per sid."""
    rows = []
    for sid, g in forecasts.groupby("sid", sort=True):
        rows.append(
            {
                "sid": sid,
                **point_metrics(
                    g["y"].to_numpy(),
                    g["yhat"].to_numpy(),
                    g["yhat_lower"].to_numpy(),
                    g["yhat_upper"].to_numpy(),
                    float(scales.get(sid, np.nan)),
                ),
            }
        )
    return pd.DataFrame(rows)


def overall_metrics(forecasts: pd.DataFrame, scales: pd.Series) -> dict[str, float]:
    """Pooled over all rows (smape, mae, rmse, coverage); mase is the mean of per-series MASE."""
    out = point_metrics(
        forecasts["y"].to_numpy(),
        forecasts["yhat"].to_numpy(),
        forecasts["yhat_lower"].to_numpy(),
        forecasts["yhat_upper"].to_numpy(),
    )
    per = metrics_by_series(forecasts, scales)
    out["mase"] = float(per["mase"].mean())
    return out
