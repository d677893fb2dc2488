"""The declarative retrain policy: evidence in, a recorded decision out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from shelfwise.configs.monitoring import RetrainPolicy
from shelfwise.models.metrics import HIGHER_IS_BETTER


@dataclass(frozen=True)
class Evidence:
    model_version: str
    window_rows: int
    drift_share: float | None
    prediction_drifted: bool
    labelled_rows: int
    performance: dict[str, float] | None
    gate_metric: float | None
    new_feedback_rows: int


@dataclass(frozen=True)
class LastRetrain:
    at: datetime
    model_version: str
    trigger: str
    labelled_since: int | None = None  # labelled rows that arrived after the request


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    trigger: str | None
    reasons: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def findings(
    evidence: Evidence, policy: RetrainPolicy, min_window_rows: int
) -> list[tuple[str, str]]:
    """Every rule the evidence breaks, as (trigger, reason)."""
    out: list[tuple[str, str]] = []
    if evidence.window_rows >= min_window_rows and evidence.drift_share is not None:
        if evidence.drift_share >= policy.drift_share:
            out.append(("drift", f"drift share {evidence.drift_share:.2f} >= {policy.drift_share}"))
        if policy.prediction_drift and evidence.prediction_drifted:
            out.append(("drift", "prediction distribution drifted"))
    rule = policy.performance
    if evidence.performance and evidence.labelled_rows >= rule.min_labelled_rows:
        value = evidence.performance.get(rule.metric)
        higher = rule.metric in HIGHER_IS_BETTER
        if value is not None:
            if rule.floor is not None and (value < rule.floor if higher else value > rule.floor):
                out.append(("feedback", f"{rule.metric} {value:.4f} beyond floor {rule.floor}"))
            gate = evidence.gate_metric
            if gate is not None:
                drop = (gate - value) if higher else (value - gate)
                relative = rule.max_relative_drop
                allowed = [
                    a
                    for a in (rule.max_drop, None if relative is None else relative * abs(gate))
                    if a is not None
                ]
                if allowed and drop > min(allowed):
                    out.append(
                        (
                            "feedback",
                            f"{rule.metric} {value:.4f} is {drop:.4f} worse than the version's "
                            f"gate value {gate:.4f} (allowed {min(allowed):.4f})",
                        )
                    )
    if evidence.new_feedback_rows >= policy.new_feedback_rows:
        out.append(
            ("feedback", f"{evidence.new_feedback_rows} new labelled rows since the last training")
        )
    return out


def decide(
    evidence: Evidence,
    policy: RetrainPolicy,
    min_window_rows: int,
    last: LastRetrain | None,
    now: datetime,
) -> RetrainDecision:
    """Retrain when a rule is broken, unless within the cooldown or this incident (same champion
    version, same trigger) already had its retrain."""
    found = findings(evidence, policy, min_window_rows)
    return incident_decision(
        found,
        evidence.model_version,
        policy.cooldown_minutes,
        last,
        now,
        policy.new_incident_labelled_rows,
    )


def incident_decision(
    found: list[tuple[str, str]],
    model_version: str,
    cooldown_minutes: float,
    last: LastRetrain | None,
    now: datetime,
    fresh_labelled_rows: int | None = None,
) -> RetrainDecision:
    """Findings -> decision, with the cooldown and one retrain per incident (shared by every
    model's policy). An incident is the champion version and the trigger; it is over (a new
    one may retrain) once ``fresh_labelled_rows`` labelled rows arrived after its retrain
    request: the evidence a refused retrain lacked."""
    if not found:
        return RetrainDecision(False, None, ["no rule broken"])
    trigger = "drift" if any(t == "drift" for t, _ in found) else found[0][0]
    reasons = [r for _, r in found]
    if last is not None:
        if now - last.at < timedelta(minutes=cooldown_minutes):
            return RetrainDecision(
                False, trigger, reasons, [f"cooldown: last retrain at {last.at.isoformat()}"]
            )
        fresh = (
            fresh_labelled_rows is not None
            and last.labelled_since is not None
            and last.labelled_since >= fresh_labelled_rows
        )
        if last.model_version == model_version and last.trigger == trigger and not fresh:
            return RetrainDecision(
                False,
                trigger,
                reasons,
                [f"incident already handled: retrain requested for v{last.model_version}"],
            )
    return RetrainDecision(True, trigger, reasons)
