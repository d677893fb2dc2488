"""registry/gate.py pure functions: paired bootstrap and rule evaluation (no servers)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from shelfwise.configs.tasks import gate_rule, load_task
from shelfwise.registry.gate import _weighted_auc, decide, paired_bootstrap
from tests.registry.gate_helpers import without_baseline

FP = "eval-fp"


def test_vectorised_bootstrap_auc_matches_sklearn_on_each_resample():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400).astype(float)
    p = np.round(rng.random(400), 2)  # many ties
    W = rng.multinomial(400, np.full(400, 1 / 400), size=5).astype(float)
    fast = _weighted_auc(y, p, W)
    for w, got in zip(W, fast, strict=True):
        idx = np.repeat(np.arange(400), w.astype(int))
        assert got == pytest.approx(roc_auc_score(y[idx], p[idx]), abs=1e-12)


def _noisy(y, noise, rng):
    return np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, noise, len(y)), 0.001, 0.999)


def test_paired_bootstrap_orients_improvement_for_both_directions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1500).astype(float)
    good, bad = _noisy(y, 0.25, rng), _noisy(y, 0.6, rng)
    up = paired_bootstrap(y, bad, good, "roc_auc", True, 300, 1, 0.95)
    assert up.improvement > 0 and up.low > 0 and up.low <= up.improvement <= up.high
    down = paired_bootstrap(y, good, bad, "roc_auc", True, 300, 1, 0.95)
    assert down.high < 0
    # lower-is-better: a forecaster with smaller errors improves smape (positive improvement)
    truth = rng.uniform(10, 100, 1500)
    close, far = truth + rng.normal(0, 2, 1500), truth + rng.normal(0, 15, 1500)
    s = paired_bootstrap(truth, far, close, "smape", False, 300, 1, 0.95)
    assert s.improvement > 0 and s.low > 0


def test_first_version_is_judged_on_floors_only():
    rule = without_baseline("delay_risk")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1000).astype(float)
    strong = decide(rule, y, _noisy(y, 0.3, rng), None, "1", None, FP, FP, None)
    assert strong.promote and strong.interval is None
    weak = decide(rule, y, rng.random(1000), None, "1", None, FP, FP, None)
    assert not weak.promote
    assert any("roc_auc" in r and "not >=" in r for r in weak.reasons)


def test_refuses_worse_promotes_better_and_guards_calibration():
    rule = without_baseline("delay_risk")
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000).astype(float)
    champion = _noisy(y, 0.45, rng)
    better = _noisy(y, 0.25, rng)
    d = decide(rule, y, better, champion, "2", "1", FP, FP, FP)
    assert d.promote, d.reasons
    worse = decide(rule, y, champion, better, "3", "2", FP, FP, FP)
    assert not worse.promote and any(
        c.name == "primary:roc_auc" and not c.passed for c in worse.checks
    )
    # same ranking (same ROC-AUC) but badly calibrated: guardrails refuse it
    squashed = 0.5 + (better - 0.5) * 0.1
    g = decide(rule, y, squashed, better, "4", "2", FP, FP, FP)
    failed = {c.name for c in g.checks if not c.passed}
    assert not g.promote and {"guardrail:brier", "guardrail:ece"} <= failed


def test_eval_fingerprint_mismatch_is_refused_unless_allowed():
    rule = without_baseline("delay_risk")
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 1500).astype(float)
    champion, better = _noisy(y, 0.45, rng), _noisy(y, 0.25, rng)
    d = decide(rule, y, better, champion, "2", "1", FP, FP, "other-fp")
    assert not d.promote and any("evaluation sets differ" in r for r in d.reasons)
    allowed = rule.model_copy(update={"allow_fingerprint_mismatch": True})
    assert decide(allowed, y, better, champion, "2", "1", FP, FP, "other-fp").promote


def test_demand_forecast_rule_lower_is_better():
    rule = without_baseline("demand_forecast")
    rng = np.random.default_rng(5)
    truth = rng.uniform(20, 80, 1200)
    champion = truth + rng.normal(0, 8, 1200)
    challenger = truth + rng.normal(0, 3, 1200)
    assert decide(rule, truth, challenger, champion, "2", "1", FP, FP, FP).promote
    refused = decide(rule, truth, champion, challenger, "3", "2", FP, FP, FP)
    assert not refused.promote
    assert refused.interval is not None and refused.interval.high < 0


def test_baseline_requirement_is_relative_and_never_defaults_to_yes():
    """A rule with no floors: the first version must beat the naive baseline on the same rows;
    without baseline predictions the check fails rather than passing."""
    from shelfwise.configs.gate import GateRule

    rule = GateRule.model_validate(
        {"primary": {"metric": "roc_auc"}, "baseline": {"metric": "roc_auc"}}
    )
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 1000).astype(float)
    naive = np.full(len(y), y.mean())  # prevalence only: ROC-AUC 0.5

    def first_version(pred, **baseline):  # no champion yet
        return decide(rule, y, pred, None, "1", None, FP, FP, None, **baseline)

    with_naive = {"baselines": {"prevalence": naive}, "naive": "prevalence"}
    good = first_version(_noisy(y, 0.3, rng), **with_naive)
    assert good.promote and any(c.name == "baseline:prevalence:roc_auc" for c in good.checks)
    useless = first_version(np.full(len(y), 0.5), **with_naive)
    assert not useless.promote and "vs prevalence" in useless.reasons[0]
    missing = first_version(_noisy(y, 0.3, rng))
    assert not missing.promote and "no naive baseline scored" in missing.reasons[0]


def test_regression_kind_default_rule_needs_the_training_mean_beaten(tmp_path):
    """The regression kind's default gate: RMSE primary, and a first version must beat the
    naive 'mean' (the training split's mean on every row) - no absolute floor."""
    import yaml

    from shelfwise.registry.gate import EvalSet

    path = tmp_path / "sales.yaml"
    dataset = {"kind": "tabular", "name": "s", "path": "s.csv", "target": "y", "numeric": ["x"]}
    path.write_text(yaml.safe_dump({"name": "sales", "kind": "regression", "dataset": dataset}))
    task = load_task(path)
    rule = gate_rule(task)
    assert rule.primary.metric == "rmse" and rule.floors == {}
    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, 600)
    eval_set = EvalSet(X=None, y=y, fingerprint=FP, naive_value=51.0)
    naive = {task.naive_baseline: eval_set.naive_predictions()}
    good = decide(
        rule,
        y,
        y + rng.normal(0, 3, 600),
        None,
        "1",
        None,
        FP,
        FP,
        None,
        baselines=naive,
        naive=task.naive_baseline,
    )
    assert good.promote, good.reasons
    assert any(c.name == "baseline:mean:rmse" and c.passed for c in good.checks)
    # a model no better than the training mean is refused, and says so
    flat = decide(
        rule,
        y,
        np.full(600, 50.5) + rng.normal(0, 5, 600),
        None,
        "1",
        None,
        FP,
        FP,
        None,
        baselines=naive,
        naive=task.naive_baseline,
    )
    assert not flat.promote
    assert any("vs mean" in r for r in flat.reasons)
    # r2 is scored by the gate too (higher is better)
    r2 = decide(
        rule.model_copy(update={"floors": {"r2": 0.5}}),
        y,
        y + rng.normal(0, 3, 600),
        None,
        "1",
        None,
        FP,
        FP,
        None,
        baselines=naive,
        naive="mean",
    )
    assert r2.challenger_metrics["r2"] > 0.8 and r2.promote
