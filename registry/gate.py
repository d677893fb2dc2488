"""The promotion gate: score champion and challenger on the same fixed evaluation set, compare
them with a paired bootstrap, and apply the task's declarative rule (its declaration's `gate`).

Everything here except the two ``load_*``/``score_*`` helpers is a pure function of arrays and
config. The decision is the conjunction of explicit checks (fingerprint, floors, primary metric,
guardrails, optional cost guardrail); each check carries its own reason, and a version is
promoted only when every check it is subject to passes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

from shelfwise.configs.datasets import TabularDatasetSpec
from shelfwise.configs.gate import BusinessCost, GateRule
from shelfwise.configs.tabular_training import TabularTrainingConfig
from shelfwise.models.datasets import fingerprint, split_with_extra
from shelfwise.models.metrics import (
    HIGHER_IS_BETTER,
    business_cost,
    expected_calibration_error,
    regression_metrics,
)
from shelfwise.models.tabular import features_and_target
from shelfwise.registry.model_code import load_pyfunc

if TYPE_CHECKING:
    from shelfwise.registry.online import OnlineComparison

logger = logging.getLogger(__name__)

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)


def _smape(y: np.ndarray, p: np.ndarray) -> float:
    """Symmetric MAPE in percent (0/0 counts as 0)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    denom = np.abs(y) + np.abs(p)
    ratio = np.divide(2 * np.abs(p - y), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(100 * ratio.mean())


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


# What the gate can score, by metric name (names and definitions as in models/metrics.py).
METRIC_FUNCTIONS: dict[str, MetricFn] = {
    "roc_auc": lambda y, p: float(roc_auc_score(y, p)),
    "pr_auc": lambda y, p: float(average_precision_score(y, p)),
    "accuracy": lambda y, p: float(np.mean((_f(p) >= 0.5) == (_f(y) == 1))),
    "f1": lambda y, p: float(f1_score(y, (_f(p) >= 0.5).astype(int), zero_division=0)),
    "brier": lambda y, p: float(np.mean((_clip(p) - _f(y)) ** 2)),
    "log_loss": lambda y, p: float(log_loss(y, _clip(p), labels=[0, 1])),
    "ece": lambda y, p: expected_calibration_error(y, p),
    "smape": _smape,
    "mae": lambda y, p: float(np.mean(np.abs(_f(p) - _f(y)))),
    "rmse": lambda y, p: float(np.sqrt(np.mean((_f(p) - _f(y)) ** 2))),
    "r2": lambda y, p: regression_metrics(y, p)["r2"],
}


# --- vectorised bootstrap: each resample is a row of counts W (how often each row was drawn) --


def _weighted_auc(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count 1/2) of every count vector in ``W`` (B x n), in one pass."""
    order = np.argsort(p, kind="mergesort")
    ps, ys, Ws = p[order], y[order], W[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # tie groups of equal scores
    pos = np.add.reduceat(Ws * (ys == 1), starts, axis=1)
    neg = np.add.reduceat(Ws * (ys == 0), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def _weighted_mean(values: np.ndarray, W: np.ndarray) -> np.ndarray:
    return (W * values).sum(1) / W.sum(1)


def _weighted_smape(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    denom = np.abs(y) + np.abs(p)
    ratio = np.divide(2 * np.abs(p - y), denom, out=np.zeros_like(denom), where=denom > 0)
    return 100 * _weighted_mean(ratio, W)


WeightedFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
WEIGHTED_METRICS: dict[str, WeightedFn] = {
    "roc_auc": _weighted_auc,
    "brier": lambda y, p, W: _weighted_mean((_clip(p) - y) ** 2, W),
    "log_loss": lambda y, p, W: _weighted_mean(
        -(y * np.log(_clip(p)) + (1 - y) * np.log(1 - _clip(p))), W
    ),
    "accuracy": lambda y, p, W: _weighted_mean(((p >= 0.5) == (y == 1)).astype(float), W),
    "mae": lambda y, p, W: _weighted_mean(np.abs(p - y), W),
    "rmse": lambda y, p, W: np.sqrt(_weighted_mean((p - y) ** 2, W)),
    "smape": _weighted_smape,
}


class GateError(ValueError):
    """The gate cannot run (unknown metric, empty evaluation set, unreadable model)."""


@dataclass(frozen=True)
class EvalSet:
    """The gate's fixed evaluation rows with the fingerprint that identifies them."""

    X: pd.DataFrame
    y: np.ndarray
    fingerprint: str
    naive_value: float | None = None  # the training split's target mean (prevalence / mean)

    def naive_predictions(self) -> np.ndarray | None:
        """The naive baseline's predictions on these rows: the training mean everywhere."""
        if self.naive_value is None:
            return None
        return np.full(len(self.y), float(self.naive_value))


@dataclass(frozen=True)
class Check:
    name: str  # e.g. floor:roc_auc, primary:roc_auc, guardrail:brier, eval_fingerprint
    passed: bool
    detail: str


@dataclass(frozen=True)
class BootstrapInterval:
    metric: str
    improvement: float  # point estimate, oriented so that positive = challenger better
    low: float
    high: float
    confidence: float
    n: int


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]
    candidate_version: str
    champion_version: str | None
    primary_metric: str
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    interval: BootstrapInterval | None
    eval_fingerprint: str
    checks: list[Check] = field(default_factory=list)
    baselines: dict[str, dict[str, float]] | None = None  # reported beside, never decisive
    # the live comparison the online check judged (registry/online.py), when the rule has one
    online: OnlineComparison | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def higher_is_better(metric: str, override: bool | None = None) -> bool:
    return override if override is not None else metric in HIGHER_IS_BETTER


def metric_fn(name: str) -> MetricFn:
    if name not in METRIC_FUNCTIONS:
        raise GateError(
            f"gate rule uses unknown metric {name!r}; known: {sorted(METRIC_FUNCTIONS)}"
        )
    return METRIC_FUNCTIONS[name]


def score_metrics(
    y: np.ndarray, pred: np.ndarray, rule: GateRule, extra: tuple[str, ...] = ()
) -> dict[str, float]:
    """Every metric the rule needs (plus ``extra``), and the business cost when configured."""
    names = list(dict.fromkeys([*rule.metrics(), *extra]))
    out = {name: metric_fn(name)(y, pred) for name in names}
    if rule.business_cost is not None:
        out["business_cost"] = cost_per_order(y, pred, rule.business_cost)
    return out


def cost_per_order(y: np.ndarray, proba: np.ndarray, cost: BusinessCost) -> float:
    return business_cost(y, proba, cost.threshold, cost.cost_missed_late, cost.cost_false_alarm)


def paired_bootstrap(
    y: np.ndarray,
    champion_pred: np.ndarray,
    challenger_pred: np.ndarray,
    metric: str,
    higher: bool,
    n: int,
    seed: int,
    confidence: float,
    chunk: int = 200,
    groups: np.ndarray | None = None,
) -> BootstrapInterval:
    """Percentile CI of the improvement (challenger minus champion, sign-flipped for
    lower-is-better metrics) over ``n`` resamples that draw the *same* rows for both models.

    A resample is a vector of draw counts (multinomial, the same as sampling rows with
    replacement); metrics in WEIGHTED_METRICS are computed for a chunk of resamples at once,
    the others row-resample by row-resample. With ``groups`` (one label per row, e.g. the
    series of a forecast row) whole groups are resampled instead of rows (a cluster
    bootstrap: rows of one series are not independent); it needs a weighted metric.
    """
    y = np.asarray(y, dtype=float)
    a, b = np.asarray(champion_pred, float), np.asarray(challenger_pred, float)
    if not (len(y) == len(a) == len(b)) or len(y) == 0:
        raise GateError(
            f"bootstrap needs equal, non-empty lengths (y {len(y)}, champion {len(a)}, "
            f"challenger {len(b)})"
        )
    fn = metric_fn(metric)
    sign = 1.0 if higher else -1.0
    point = sign * (fn(y, b) - fn(y, a))
    rng = np.random.default_rng(seed)
    m = len(y)
    group_index = None
    if groups is not None:
        if len(groups) != m or metric not in WEIGHTED_METRICS:
            raise GateError(
                f"a grouped bootstrap needs one group per row and a weighted metric "
                f"({sorted(WEIGHTED_METRICS)}); got {len(groups)} groups, metric {metric}"
            )
        _, group_index = np.unique(np.asarray(groups), return_inverse=True)
    parts: list[np.ndarray] = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        if group_index is not None:
            g = int(group_index.max()) + 1
            W = rng.multinomial(g, np.full(g, 1.0 / g), size=size).astype(float)[:, group_index]
        else:
            W = rng.multinomial(m, np.full(m, 1.0 / m), size=size).astype(float)
        if metric in WEIGHTED_METRICS:
            wfn = WEIGHTED_METRICS[metric]
            parts.append(sign * (wfn(y, b, W) - wfn(y, a, W)))
        else:
            idx = [np.repeat(np.arange(m), w.astype(int)) for w in W]
            parts.append(np.array([sign * (fn(y[i], b[i]) - fn(y[i], a[i])) for i in idx]))
    diffs = np.concatenate(parts)
    diffs = diffs[np.isfinite(diffs)]  # e.g. a one-class resample has no ROC-AUC
    if diffs.size == 0:
        raise GateError(f"no usable bootstrap resample for {metric}")
    alpha = 1.0 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return BootstrapInterval(metric, float(point), float(low), float(high), confidence, diffs.size)


def check_fingerprints(
    eval_fp: str,
    challenger_fp: str | None,
    champion_fp: str | None,
    has_champion: bool,
    allow: bool,
) -> Check:
    """Versions must have been evaluated on the evaluation set the gate scores them on now
    (the same fingerprint); otherwise a version may have trained on the gate's rows."""
    seen = {"challenger": challenger_fp, **({"champion": champion_fp} if has_champion else {})}
    mismatched = {k: v for k, v in seen.items() if v != eval_fp}
    if not mismatched:
        return Check("eval_fingerprint", True, f"both scored on evaluation set {eval_fp}")
    detail = ", ".join(f"{k} recorded {v or 'no fingerprint'}" for k, v in mismatched.items())
    if allow:
        return Check(
            "eval_fingerprint",
            True,
            f"re-scored on evaluation set {eval_fp} although {detail} (allowed by config)",
        )
    return Check(
        "eval_fingerprint",
        False,
        f"evaluation sets differ: gate set is {eval_fp} but {detail}; refusing to compare "
        "(set allow_fingerprint_mismatch to re-score both on the current set)",
    )


def check_floors(metrics: Mapping[str, float], floors: Mapping[str, float]) -> list[Check]:
    out = []
    for name, bound in floors.items():
        value = metrics[name]
        if higher_is_better(name):
            ok, op = value >= bound, ">="
        else:
            ok, op = value <= bound, "<="
        out.append(
            Check(
                f"floor:{name}", bool(ok), f"{name} {value:.4f} {'' if ok else 'not '}{op} {bound}"
            )
        )
    return out


def check_baseline(
    rule: GateRule,
    challenger: Mapping[str, float],
    baseline_metrics: Mapping[str, Mapping[str, float]],
    naive: str | None,
) -> list[Check]:
    """Relative quality: the challenger beats the declared (or the kind's naive) baseline on the
    same rows by more than ``min_improvement``. No baseline predictions: the check fails."""
    req = rule.baseline
    if req is None:
        return []
    family = req.family or naive
    name = f"baseline:{family or 'naive'}:{req.metric}"
    if family is None or family not in baseline_metrics:
        have = sorted(baseline_metrics) or "none"
        return [Check(name, False, f"no {family or 'naive'} baseline scored (have {have})")]
    value, base = challenger[req.metric], baseline_metrics[family][req.metric]
    sign = 1.0 if higher_is_better(req.metric, req.higher_is_better) else -1.0
    gain = sign * (value - base)
    ok = gain > req.min_improvement
    detail = (
        f"{req.metric} {value:.4f} vs {family} {base:.4f} (better by {gain:+.4f}; "
        f"required > {req.min_improvement:+.4f})"
    )
    return [Check(name, bool(ok), detail)]


def check_primary(rule: GateRule, interval: BootstrapInterval, fresher: bool = False) -> Check:
    """Superiority: the improvement (or its CI lower bound) must exceed ``min_improvement``.
    Non-inferiority, for a challenger trained on later data when the rule sets
    ``non_inferiority_margin``: it must not be worse by more than the margin."""
    p = rule.primary
    required = p.min_improvement
    mode = ""
    if fresher and p.non_inferiority_margin is not None:
        required = -p.non_inferiority_margin
        mode = " (non-inferiority: the challenger trained on later data)"
    if p.require_significant:
        ok = interval.low > required
        basis = f"CI lower bound {interval.low:+.4f}"
    else:
        ok = interval.improvement > required
        basis = f"improvement {interval.improvement:+.4f}"
    detail = (
        f"{p.metric} improvement {interval.improvement:+.4f} "
        f"({interval.confidence:.0%} CI [{interval.low:+.4f}, {interval.high:+.4f}], "
        f"{interval.n} paired resamples); {basis} {'>' if ok else '<='} required "
        f"{required:+.4f}{mode}"
    )
    return Check(f"primary:{p.metric}", bool(ok), detail)


def check_guardrails(
    rule: GateRule, challenger: Mapping[str, float], champion: Mapping[str, float]
) -> list[Check]:
    out = []
    for g in rule.guardrails:
        sign = 1.0 if higher_is_better(g.metric, g.higher_is_better) else -1.0
        regression = -sign * (challenger[g.metric] - champion[g.metric])
        ok = regression <= g.tolerance
        out.append(
            Check(
                f"guardrail:{g.metric}",
                bool(ok),
                f"{g.metric} {champion[g.metric]:.4f} -> {challenger[g.metric]:.4f} "
                f"(worse by {max(regression, 0.0):.4f}; tolerance {g.tolerance})",
            )
        )
    cost = rule.business_cost
    if cost is not None and cost.max_increase is not None:
        rise = challenger["business_cost"] - champion["business_cost"]
        out.append(
            Check(
                "guardrail:business_cost",
                bool(rise <= cost.max_increase),
                f"cost per order {champion['business_cost']:.4f} -> "
                f"{challenger['business_cost']:.4f} (max increase {cost.max_increase})",
            )
        )
    return out


def decide(
    rule: GateRule,
    y: np.ndarray,
    challenger_pred: np.ndarray,
    champion_pred: np.ndarray | None,
    candidate_version: str,
    champion_version: str | None,
    eval_fingerprint: str,
    challenger_fp: str | None,
    champion_fp: str | None,
    groups: np.ndarray | None = None,
    extra_checks: list[Check] | None = None,
    baselines: dict[str, np.ndarray] | None = None,
    fresher: bool = False,
    naive: str | None = None,
) -> GateDecision:
    """Apply ``rule`` to predictions of both models on the same rows -> a ``GateDecision``.

    Without a champion, the challenger is subject to the fingerprint check and the floors only.
    ``groups`` makes the bootstrap resample groups of rows (series) instead of rows;
    ``extra_checks`` are task-specific checks that must pass too (e.g. no leakage);
    ``baselines`` (name -> predictions on the same rows) are scored and reported beside;
    ``naive`` names the one the rule's ``baseline`` requirement means when it names no family.
    """
    has_champion = champion_pred is not None
    challenger_m = score_metrics(y, challenger_pred, rule)
    champion_m = score_metrics(y, champion_pred, rule) if has_champion else None
    baseline_m = {k: score_metrics(y, v, rule) for k, v in (baselines or {}).items()}
    checks = [
        check_fingerprints(
            eval_fingerprint,
            challenger_fp,
            champion_fp,
            has_champion,
            rule.allow_fingerprint_mismatch,
        ),
        *check_floors(challenger_m, rule.floors),
        *check_baseline(rule, challenger_m, baseline_m, naive),
        *(extra_checks or []),
    ]
    interval = None
    if has_champion:
        p = rule.primary
        interval = paired_bootstrap(
            y,
            champion_pred,
            challenger_pred,
            p.metric,
            higher_is_better(p.metric, p.higher_is_better),
            rule.bootstrap.n,
            rule.bootstrap.seed,
            rule.bootstrap.confidence,
            groups=groups,
        )
        checks.append(check_primary(rule, interval, fresher))
        checks.extend(check_guardrails(rule, challenger_m, champion_m))
    if not checks:  # unreachable (a rule needs a baseline or a floor); never default yes
        raise GateError("gate rule produced no checks")
    promote = all(c.passed for c in checks)
    failed = [c.detail for c in checks if not c.passed]
    if promote:
        if not has_champion:
            head = "first version: passes the floors and beats the baseline"
        elif fresher and rule.primary.non_inferiority_margin is not None:
            head = "trained on later data and not worse than the champion"
        else:
            head = "beats the champion"
        reasons = [head, *(c.detail for c in checks)]
    else:
        reasons = failed
    return GateDecision(
        promote=promote,
        reasons=reasons,
        candidate_version=candidate_version,
        champion_version=champion_version,
        primary_metric=rule.primary.metric,
        challenger_metrics=challenger_m,
        champion_metrics=champion_m,
        interval=interval,
        eval_fingerprint=eval_fingerprint,
        checks=checks,
        baselines=baseline_m or None,
    )


# --- evaluation data and model scoring (I/O) ---------------------------------------------------


def load_tabular_eval_set(
    spec: TabularDatasetSpec,
    cfg: TabularTrainingConfig,
    data_dir: Path,
    extra_data: str | Path | None = None,
    kind: str = "classification",
    policy: Any = None,
) -> EvalSet:
    """The held-out split of a tabular task: the same rows as flows/train.py's test split (row
    filter applied, plus the held-out part of any extra labelled rows), with the training
    split's target mean as the naive baseline."""
    split = split_with_extra(
        spec,
        cfg.row_filter,
        cfg.split.test_size,
        cfg.split.seed,
        data_dir,
        extra_data,
        kind,
        policy,
    )
    X, y = features_and_target(split.test, spec, kind)
    naive = float(features_and_target(split.train, spec, kind)[1].mean())
    return EvalSet(X, y, fingerprint(split.test), naive)


def score_tabular(model_uri: str, X: pd.DataFrame) -> np.ndarray:
    """What a registered tabular model's pyfunc returns, as one float per row: the
    positive-class probability of a classifier, the prediction of a regressor."""
    try:
        model = load_pyfunc(model_uri)
    except Exception as exc:
        raise GateError(f"cannot load {model_uri}: {exc}") from exc
    out = np.asarray(model.predict(X))
    if out.ndim == 2:
        out = out[:, -1]
    if len(out) != len(X):
        raise GateError(f"{model_uri} returned {len(out)} predictions for {len(X)} rows")
    return out.astype(float)
