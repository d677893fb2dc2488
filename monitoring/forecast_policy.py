"""Retrain policy for forecasters: the champion's forecasts against realised actuals.

Two rules, each recorded with its evidence:

* performance: SMAPE on the scored actuals above the floor, or worse than the version's own gate
  SMAPE (``metric.smape``, its latest backtest fold) by more than ``max_drop`` points, once at
  least ``min_rows`` (series, date) rows are scored;
* window: actuals have arrived for ``window_realised_share`` of the champion's forecast window
  (or beyond it): a forecaster anchored at its training end is running out of future.

Cooldown and one retrain per incident come from monitoring.policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import pandas as pd

from shelfwise.configs.monitoring_forecast import ForecastRetrainPolicy
from shelfwise.monitoring.policy import LastRetrain, RetrainDecision, incident_decision


@dataclass(frozen=True)
class ForecastEvidence:
    model_version: str
    data_end: str  # last date the champion trained on
    window_end: str  # last date it can forecast
    actual_rows: int  # actual rows after data_end for series the champion knows
    scored_rows: int  # of those, inside its forecast window
    beyond_window_rows: int
    realised_to: str | None  # latest actual date
    window_realised_share: float  # periods of the window with actuals / window periods
    performance: dict[str, float] | None
    gate_smape: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def window_share(data_end: str, window_end: str, realised_to: str | None) -> float:
    """Share of the forecast window (data_end, window_end] whose actuals have arrived."""
    if realised_to is None:
        return 0.0
    start, end, got = (pd.Timestamp(x) for x in (data_end, window_end, realised_to))
    total = (end - start).days
    return float(min(max((got - start).days, 0), total) / total) if total > 0 else 1.0


def forecast_findings(
    evidence: ForecastEvidence, policy: ForecastRetrainPolicy
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    rule = policy.performance
    perf = evidence.performance
    if perf and evidence.scored_rows >= rule.min_rows:
        value = perf["smape"]
        if value > rule.floor:
            out.append(("feedback", f"smape {value:.3f} on actuals beyond floor {rule.floor}"))
        if evidence.gate_smape is not None and value - evidence.gate_smape > rule.max_drop:
            out.append(
                (
                    "feedback",
                    f"smape {value:.3f} on {evidence.scored_rows} actuals is "
                    f"{value - evidence.gate_smape:.3f} points worse than the version's gate "
                    f"smape {evidence.gate_smape:.3f} (allowed {rule.max_drop})",
                )
            )
    if evidence.window_realised_share >= policy.window_realised_share:
        out.append(
            (
                "feedback",
                f"actuals up to {evidence.realised_to} cover "
                f"{evidence.window_realised_share:.0%} of the forecast window "
                f"({evidence.data_end} .. {evidence.window_end}; "
                f"{evidence.beyond_window_rows} actual rows beyond it): "
                f"threshold {policy.window_realised_share:.0%}",
            )
        )
    return out


def decide_forecast_retrain(
    evidence: ForecastEvidence,
    policy: ForecastRetrainPolicy,
    last: LastRetrain | None,
    now: datetime,
) -> RetrainDecision:
    found = forecast_findings(evidence, policy)
    return incident_decision(found, evidence.model_version, policy.cooldown_minutes, last, now)
