"""Alarms on the champion's live traffic (``TaskDeclaration.alarms``, configs/online.py): pure
functions over the store's rows (``PredictionStore.online_rows``) that say whether to roll
back, and why.

- error rate: the champion's ``error`` rows over its answered + error rows in the window;
- p99 latency: of the model time the service records per answered row (``latency_ms``);
- live metric: the selection metric on the champion's labelled rows against the numbers
  ``@previous`` had: its own live metric when it has ``min_labelled`` labelled rows from when
  it served, else its gate metric (``metric.<name>`` tag). It fires only when the live metric is
  *confidently* worse than that by more than ``max_metric_drop``: the upper bound of its
  bootstrap interval (95%) is below ``reference - max_metric_drop`` (lower-is-better metrics:
  mirrored), so a sound champion's sampling noise does not roll it back;
- cooldown: no alarm acts within ``cooldown_s`` of the last alarm rollback.

Each verdict names what it saw; the flow (flows/online.py) rolls back on a fired verdict with
the reasons as the recorded reason (``trigger=alarm``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from shelfwise.configs.online import AlarmSettings
from shelfwise.registry.gate import WEIGHTED_METRICS, metric_fn

ANSWERED = "champion"
ERROR = "error"
CONFIDENCE = 0.95
BOOTSTRAP_N = 400


@dataclass(frozen=True)
class AlarmVerdict:
    fired: bool
    reasons: list[str]
    observed: dict[str, float | None] = field(default_factory=dict)
    cooldown_until: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cooldown_until"] = self.cooldown_until.isoformat() if self.cooldown_until else None
        return d


def cooldown_until(last_alarm_at: datetime | None, cooldown_s: int) -> datetime | None:
    return None if last_alarm_at is None else last_alarm_at + timedelta(seconds=cooldown_s)


def in_cooldown(now: datetime, last_alarm_at: datetime | None, cooldown_s: int) -> bool:
    until = cooldown_until(last_alarm_at, cooldown_s)
    return until is not None and now < until


def metric_upper_bound(
    y: np.ndarray, p: np.ndarray, metric: str, higher: bool, seed: int = 0
) -> float:
    """The bound of the metric's bootstrap interval on the *good* side (upper for
    higher-is-better metrics, lower for the others): how good the rows could plausibly be."""
    fn = metric_fn(metric)
    m = len(y)
    rng = np.random.default_rng(seed)
    W = rng.multinomial(m, np.full(m, 1.0 / m), size=BOOTSTRAP_N).astype(float)
    if metric in WEIGHTED_METRICS:
        values = WEIGHTED_METRICS[metric](y, p, W)
    else:
        idx = [np.repeat(np.arange(m), w.astype(int)) for w in W]
        values = np.array([fn(y[i], p[i]) for i in idx])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    alpha = 1.0 - CONFIDENCE
    return float(np.quantile(values, 1 - alpha / 2 if higher else alpha / 2))


def live_metric(rows: pd.DataFrame, metric: str) -> float | None:
    """``metric`` on labelled answered rows; None when it cannot be computed (one class)."""
    labelled = rows[rows["actual"].notna() & rows["prediction"].notna()]
    if len(labelled) < 2:
        return None
    try:
        value = metric_fn(metric)(
            labelled["actual"].to_numpy(float), labelled["prediction"].to_numpy(float)
        )
    except ValueError:
        return None
    return float(value) if np.isfinite(value) else None


def reference_metric(
    previous_rows: pd.DataFrame, metric: str, min_labelled: int, gate_value: float | None
) -> tuple[float | None, str]:
    """(the number ``@previous`` had, where it came from): its live metric from when it
    answered, given enough labelled rows, else its gate metric."""
    answered = previous_rows[previous_rows["role"] == ANSWERED]
    labelled = answered[answered["actual"].notna()]
    if len(labelled) >= min_labelled:
        value = live_metric(labelled, metric)
        if value is not None:
            return value, f"live on {len(labelled)} labelled requests"
    if gate_value is not None:
        return gate_value, "gate holdout"
    return None, "none"


def _traffic_reasons(
    settings: AlarmSettings, observed: dict[str, float | None], errors: int, total: int
) -> list[str]:
    out = []
    rate, p99 = observed["error_rate"], observed["p99_latency_ms"]
    if settings.max_error_rate is not None and rate is not None and rate > settings.max_error_rate:
        out.append(f"error rate {rate:.3f} > {settings.max_error_rate} ({errors} of {total})")
    limit = settings.max_p99_latency_ms
    if limit is not None and p99 is not None and p99 > limit:
        out.append(f"p99 latency {p99:.1f} ms > {limit} ms")
    return out


def _metric_reason(
    labelled: pd.DataFrame,
    settings: AlarmSettings,
    metric: str,
    higher: bool,
    reference: float,
    observed: dict[str, float | None],
) -> str | None:
    value = live_metric(labelled, metric)
    observed[f"live_{metric}"] = value
    if value is None or settings.max_metric_drop is None:
        return None
    y = labelled["actual"].to_numpy(float)
    best = metric_upper_bound(y, labelled["prediction"].to_numpy(float), metric, higher)
    observed[f"live_{metric}_best"] = best
    drop = settings.max_metric_drop
    worse = best < reference - drop if higher else best > reference + drop
    if not worse:
        return None
    return (
        f"live {metric} {value:.4f} (95% bound {best:.4f}) on {len(labelled)} labelled "
        f"requests is worse than @previous's {reference:.4f} by more than {drop}"
    )


def check_alarms(
    rows: pd.DataFrame,
    version: str,
    settings: AlarmSettings,
    metric: str,
    higher: bool,
    reference: float | None,
    now: datetime,
    last_alarm_at: datetime | None = None,
) -> AlarmVerdict:
    """Whether champion ``version`` crossed an alarm on ``rows`` (its task's window)."""
    mine = rows[rows["model_version"].astype(str) == str(version)]
    answered = mine[mine["role"] == ANSWERED]
    errors = int((mine["role"] == ERROR).sum())
    total = len(answered) + errors
    labelled = answered[answered["actual"].notna()]
    observed: dict[str, float | None] = {
        "requests": float(total),
        "errors": float(errors),
        "labelled": float(len(labelled)),
        "error_rate": errors / total if total else None,
        "p99_latency_ms": None,
        f"live_{metric}": None,
        f"reference_{metric}": reference,
    }
    latency = answered["latency_ms"].dropna()
    if len(latency):
        observed["p99_latency_ms"] = float(np.quantile(latency.to_numpy(), 0.99))
    reasons: list[str] = []
    if total >= settings.min_requests:
        reasons += _traffic_reasons(settings, observed, errors, total)
    judged = settings.max_metric_drop is not None and len(labelled) >= settings.min_labelled
    if judged and reference is not None:
        reason = _metric_reason(labelled, settings, metric, higher, reference, observed)
        reasons += [reason] if reason else []
    until = cooldown_until(last_alarm_at, settings.cooldown_s)
    if reasons and in_cooldown(now, last_alarm_at, settings.cooldown_s):
        return AlarmVerdict(
            False,
            [f"in cooldown until {until:%Y-%m-%d %H:%M:%S}: " + "; ".join(reasons)],
            observed,
            until,
        )
    return AlarmVerdict(bool(reasons), reasons, observed, until)
