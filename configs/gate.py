"""Promotion-gate rules: one declarative rule per task (in the spirit of MLflow's
``validate_evaluation_results`` / ``MetricThreshold``).

A rule says what "better" means for a task:

* ``primary``: the metric that must improve, by at least ``min_improvement`` (in the metric's own
  units, oriented so that positive = better). With ``require_significant`` the *lower bound* of the
  paired-bootstrap confidence interval of the improvement must clear ``min_improvement``; without
  it, the point estimate must.
* ``guardrails``: metrics that may not get worse than the champion's by more than ``tolerance``.
* ``floors``: absolute quality every promoted version must reach (also the first one, which has no
  champion to beat): a lower bound for higher-is-better metrics, an upper bound for the others.
* ``business_cost``: the cost of a missed late delivery vs a false alarm at a decision threshold,
  reported beside the ML metrics (and optionally a guardrail itself via ``max_increase``).
* ``bootstrap``: resamples, seed and confidence level of the paired bootstrap.

The direction of a metric comes from ``higher_is_better`` when given, else from
``models.metrics.HIGHER_IS_BETTER`` (configs/ imports nothing of ours, so the gate resolves it).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from shelfwise.configs.base import StrictModel
from shelfwise.configs.online import OnlineEvidence


class PrimaryMetric(StrictModel):
    metric: str
    min_improvement: float = Field(0.0, ge=0, description="in metric units; positive = better")
    require_significant: bool = Field(
        True, description="the CI lower bound of the improvement must clear min_improvement"
    )
    higher_is_better: bool | None = None
    non_inferiority_margin: float | None = Field(
        None,
        ge=0,
        description="forecasters: a challenger trained on later data than the champion passes "
        "when it is not worse by more than this (its fresher data is the improvement the "
        "holdout cannot show); None = always require improvement",
    )


class Guardrail(StrictModel):
    metric: str
    tolerance: float = Field(0.0, ge=0, description="allowed regression in metric units")
    higher_is_better: bool | None = None


class BusinessCost(StrictModel):
    cost_missed_late: float = Field(ge=0, description="cost of a late delivery not flagged")
    cost_false_alarm: float = Field(ge=0, description="cost of flagging an on-time delivery")
    threshold: float = Field(0.5, gt=0, lt=1, description="probability at which we flag")
    max_increase: float | None = Field(
        None, ge=0, description="if set, a guardrail: cost per order may rise at most this much"
    )


class BootstrapSettings(StrictModel):
    n: int = Field(1000, ge=50, le=100_000)
    seed: int = 42
    confidence: float = Field(0.95, gt=0.5, lt=1)


class BaselineRequirement(StrictModel):
    """Relative quality: the challenger must beat the task's naive baseline on the same
    evaluation data (prevalence / mean / seasonal naive, or a named family)."""

    metric: str
    family: str | None = Field(None, description="None: the kind's naive baseline")
    min_improvement: float = Field(0.0, ge=0, description="in metric units; positive = better")
    higher_is_better: bool | None = None


class GateRule(StrictModel):
    primary: PrimaryMetric
    guardrails: list[Guardrail] = Field(default_factory=list)
    baseline: BaselineRequirement | None = Field(
        None, description="every version, the first one included, must beat the naive baseline"
    )
    floors: dict[str, float] = Field(
        default_factory=dict,
        description="absolute bounds, only where a task declares them (a baseline or a floor is "
        "needed: the first version is judged on them alone)",
    )
    business_cost: BusinessCost | None = None
    bootstrap: BootstrapSettings = BootstrapSettings()
    allow_fingerprint_mismatch: bool = Field(
        False,
        description="compare versions whose recorded eval fingerprints differ from the current "
        "evaluation set (both are re-scored on it); off: such a comparison is refused",
    )
    min_eval_periods: int | None = Field(
        None,
        ge=1,
        description="forecasters: a comparison with the champion needs an evaluation set of at "
        "least this many distinct dates (a frequent retrain's realised window can be a single "
        "day); fewer: refused, gate again later. None = no minimum",
    )

    online: OnlineEvidence | None = Field(
        None,
        description="require live evidence too: labelled requests scored by both versions "
        "(shadow or canary) and the paired-difference CI of the primary metric",
    )

    @model_validator(mode="after")
    def _distinct_metrics(self) -> GateRule:
        if not self.floors and self.baseline is None:
            raise ValueError(
                "a rule needs a baseline or at least one floor (the first version is "
                "judged on them alone)"
            )
        names = [g.metric for g in self.guardrails]
        if self.primary.metric in names:
            raise ValueError(f"metric {self.primary.metric!r} is both primary and a guardrail")
        if len(set(names)) != len(names):
            raise ValueError(f"guardrail metrics listed twice: {names}")
        return self

    def metrics(self) -> list[str]:
        """Every metric the rule needs scored."""
        out = [self.primary.metric, *(g.metric for g in self.guardrails), *self.floors]
        if self.baseline is not None:
            out.append(self.baseline.metric)
        return list(dict.fromkeys(out))
