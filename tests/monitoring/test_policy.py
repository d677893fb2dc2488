from datetime import UTC, datetime, timedelta

from shelfwise.configs.monitoring import PerformanceRule, RetrainPolicy
from shelfwise.monitoring.policy import Evidence, LastRetrain, decide

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
POLICY = RetrainPolicy(
    drift_share=0.3,
    performance=PerformanceRule(metric="roc_auc", floor=0.65, max_drop=0.05, min_labelled_rows=100),
    new_feedback_rows=5000,
    cooldown_minutes=60,
)


def evidence(**kw) -> Evidence:
    base = dict(
        model_version="3",
        window_rows=1000,
        drift_share=0.0,
        prediction_drifted=False,
        labelled_rows=500,
        performance={"roc_auc": 0.74},
        gate_metric=0.74,
        new_feedback_rows=10,
    )
    base.update(kw)
    return Evidence(**base)


def test_quiet_evidence_keeps_the_champion() -> None:
    d = decide(evidence(), POLICY, 200, None, NOW)
    assert not d.retrain and d.trigger is None


def test_drift_share_over_threshold_triggers_drift() -> None:
    d = decide(evidence(drift_share=0.5), POLICY, 200, None, NOW)
    assert d.retrain and d.trigger == "drift" and "0.50" in d.reasons[0]


def test_small_window_gives_no_drift_verdict() -> None:
    d = decide(evidence(drift_share=0.9, window_rows=50), POLICY, 200, None, NOW)
    assert not d.retrain


def test_performance_drop_needs_enough_labels() -> None:
    drop = {"roc_auc": 0.66}
    assert decide(evidence(performance=drop), POLICY, 200, None, NOW).trigger == "feedback"
    few = decide(evidence(performance=drop, labelled_rows=20), POLICY, 200, None, NOW)
    assert not few.retrain
    floor = decide(evidence(performance={"roc_auc": 0.6}, gate_metric=None), POLICY, 200, None, NOW)
    assert floor.retrain and "floor" in floor.reasons[0]


def test_lower_is_better_metric_direction() -> None:
    policy = POLICY.model_copy(
        update={"performance": PerformanceRule(metric="brier", floor=0.3, max_drop=0.02)}
    )
    worse = decide(evidence(performance={"brier": 0.25}, gate_metric=0.18), policy, 200, None, NOW)
    assert worse.retrain
    better = decide(evidence(performance={"brier": 0.17}, gate_metric=0.18), policy, 200, None, NOW)
    assert not better.retrain


def test_enough_new_feedback_triggers() -> None:
    d = decide(evidence(new_feedback_rows=6000), POLICY, 200, None, NOW)
    assert d.retrain and d.trigger == "feedback"


def test_cooldown_and_one_retrain_per_incident() -> None:
    recent = LastRetrain(at=NOW - timedelta(minutes=10), model_version="3", trigger="drift")
    d = decide(evidence(drift_share=0.5), POLICY, 200, recent, NOW)
    assert not d.retrain and "cooldown" in d.suppressed[0]
    old_same = LastRetrain(at=NOW - timedelta(hours=5), model_version="3", trigger="drift")
    d = decide(evidence(drift_share=0.5), POLICY, 200, old_same, NOW)
    assert not d.retrain and "incident already handled" in d.suppressed[0]
    # a new champion (v4) drifting again is a new incident
    d = decide(evidence(drift_share=0.5, model_version="4"), POLICY, 200, old_same, NOW)
    assert d.retrain


def test_regression_policy_is_relative_to_the_versions_own_error() -> None:
    """RMSE has no universal bound: with no floor, a champion is retrained only when its live
    error exceeds its gate error by more than the declared fraction (lower is better)."""
    policy = RetrainPolicy(
        drift_share=0.3,
        performance=PerformanceRule(
            metric="rmse", floor=None, max_drop=None, max_relative_drop=0.2, min_labelled_rows=100
        ),
        new_feedback_rows=5000,
    )
    calm = decide(evidence(performance={"rmse": 11.5}, gate_metric=10.0), policy, 200, None, NOW)
    assert not calm.retrain
    worse = decide(evidence(performance={"rmse": 12.5}, gate_metric=10.0), policy, 200, None, NOW)
    assert worse.retrain and worse.trigger == "feedback"
    assert "2.5000 worse than the version's gate value 10.0000 (allowed 2.0000)" in worse.reasons[0]


def test_a_handled_incident_is_over_once_enough_labels_arrived_after_its_request() -> None:
    need = POLICY.new_incident_labelled_rows
    at = NOW - timedelta(hours=5)
    few = LastRetrain(at=at, model_version="3", trigger="drift", labelled_since=need - 1)
    d = decide(evidence(drift_share=0.5), POLICY, 200, few, NOW)
    assert not d.retrain and "incident already handled" in d.suppressed[0]
    # e.g. the retrain was refused by the gate; the drift persists and new labels arrived
    enough = LastRetrain(at=at, model_version="3", trigger="drift", labelled_since=need)
    d = decide(evidence(drift_share=0.5), POLICY, 200, enough, NOW)
    assert d.retrain and d.trigger == "drift" and not d.suppressed
    # the cooldown still comes first
    recent = LastRetrain(
        at=NOW - timedelta(minutes=10), model_version="3", trigger="drift", labelled_since=need
    )
    assert not decide(evidence(drift_share=0.5), POLICY, 200, recent, NOW).retrain
