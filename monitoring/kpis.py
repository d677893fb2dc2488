"""Fulfilment KPIs over a rolling window of the prediction log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd


@dataclass(frozen=True)
class FulfilmentKPIs:
    window_start: datetime
    window_end: datetime
    orders: int
    high_risk_orders: int
    mean_delay_probability: float | None
    on_time_rate: float | None
    labelled_orders: int
    segment_risk: dict[str, dict[str, float]]

    def as_dict(self) -> dict:
        return {
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "orders": self.orders,
            "high_risk_orders": self.high_risk_orders,
            "mean_delay_probability": self.mean_delay_probability,
            "on_time_rate": self.on_time_rate,
            "labelled_orders": self.labelled_orders,
            "segment_risk": self.segment_risk,
        }


def fulfilment_kpis(
    frame: pd.DataFrame,
    now: datetime,
    window_days: int,
    high_risk_threshold: float,
    segments: list[str],
    prediction_column: str = "delay_probability",
    actual_column: str = "actual",
    time_column: str = "created_at",
) -> FulfilmentKPIs:
    """Segment risk score (mean delay probability per segment value), on-time rate on labelled
    orders (actual 1 = late), and the count of orders above the high-risk threshold."""
    start = now - timedelta(days=window_days)
    if frame.empty:
        window = frame
    else:
        times = pd.to_datetime(frame[time_column], utc=True)
        window = frame[(times >= pd.Timestamp(start)) & (times <= pd.Timestamp(now))]
    proba = window[prediction_column].astype(float) if len(window) else pd.Series(dtype=float)
    labelled = (
        window[window[actual_column].notna()] if actual_column in window else window.iloc[0:0]
    )
    segment_risk = {
        seg: {str(k): float(v) for k, v in window.groupby(seg)[prediction_column].mean().items()}
        for seg in segments
        if seg in window and len(window)
    }
    return FulfilmentKPIs(
        window_start=start,
        window_end=now,
        orders=int(len(window)),
        high_risk_orders=int((proba > high_risk_threshold).sum()),
        mean_delay_probability=float(proba.mean()) if len(proba) else None,
        on_time_rate=float(1 - labelled[actual_column].astype(float).mean())
        if len(labelled)
        else None,
        labelled_orders=int(len(labelled)),
        segment_risk=segment_risk,
    )
