"""registry/online.py and registry/alarms.py as pure functions: pairing shadow rows with their
answers, the paired-difference CI and the gate's online check; the alarm rules (error rate,
p99 latency, live metric vs @previous, confidently worse only) and the cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.online import AlarmSettings, OnlineEvidence
from shelfwise.registry.alarms import (
    check_alarms,
    in_cooldown,
    reference_metric,
)
from shelfwise.registry.gate import Check, GateDecision
from shelfwise.registry.online import (
    compare_online,
    evidence_against,
    online_check,
    paired_frame,
    with_online_check,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _rows(n: int, champion_noise: float, challenger_noise: float, seed: int = 0, canary=0.3):
    """Store rows of n labelled requests: each answered by v1 (or by v2 for a canary share)
    and shadowed by the other version; predictions are the label plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    p1 = np.clip(y * 0.6 + 0.2 + rng.normal(0, champion_noise, n), 0, 1)
    p2 = np.clip(y * 0.6 + 0.2 + rng.normal(0, challenger_noise, n), 0, 1)
    out = []
    for i in range(n):
        by_two = rng.random() < canary
        answer = ("2", p2[i]) if by_two else ("1", p1[i])
        shadow = ("1", p1[i]) if by_two else ("2", p2[i])
        t = NOW - timedelta(seconds=n - i)
        base = {"order_id": f"o{i}", "created_at": t, "latency_ms": 1.0}
        out.append(
            {
                **base,
                "prediction_id": f"a{i}",
                "model_version": answer[0],
                "role": "canary" if by_two else "champion",
                "pair_of": None,
                "prediction": answer[1],
                "actual": y[i],
            }
        )
        out.append(
            {
                **base,
                "prediction_id": f"s{i}",
                "model_version": shadow[0],
                "role": "shadow",
                "pair_of": f"a{i}",
                "prediction": shadow[1],
                "actual": y[i],
            }
        )
    return pd.DataFrame(out)


def test_pairs_put_each_version_on_its_side_whoever_answered() -> None:
    rows = _rows(50, 0.3, 0.1)
    pairs = paired_frame(rows, "1", "2")
    assert len(pairs) == 50
    by_id = rows.set_index("prediction_id")
    for r in pairs.itertuples():
        answer = by_id.loc[r.prediction_id]
        shadow = by_id.loc["s" + r.prediction_id[1:]]
        one, two = (answer, shadow) if answer.model_version == "1" else (shadow, answer)
        assert r.champion == one.prediction and r.challenger == two.prediction
    # unlabelled answers and pairs of other versions are left out
    rows.loc[rows["prediction_id"] == "a0", "actual"] = np.nan
    assert len(paired_frame(rows, "1", "2")) == 49
    assert paired_frame(rows, "1", "3").empty


def test_a_better_challenger_has_a_positive_ci_and_passes_with_enough_rows() -> None:
    pairs = paired_frame(_rows(400, 0.35, 0.1), "1", "2")
    cmp = compare_online(pairs, "roc_auc", True, "1", "2")
    assert cmp.challenger_value > cmp.champion_value
    assert cmp.interval.low > 0 and cmp.interval.improvement > 0
    assert online_check(OnlineEvidence(min_labelled=300), cmp).passed
    waiting = online_check(OnlineEvidence(min_labelled=500), cmp)
    assert not waiting.passed and "400 of 500" in waiting.detail
    assert not evidence_against(OnlineEvidence(min_labelled=300), cmp)


def test_a_worse_challenger_is_evidence_against_and_fails_the_check() -> None:
    pairs = paired_frame(_rows(400, 0.1, 0.35), "1", "2")
    cmp = compare_online(pairs, "brier", False, "1", "2")
    assert cmp.interval.high < 0  # oriented: positive = challenger better
    evidence = OnlineEvidence(min_labelled=100)
    assert not online_check(evidence, cmp).passed
    assert evidence_against(evidence, cmp)


def test_equally_good_versions_give_cis_that_mostly_cover_zero() -> None:
    covered = []
    for seed in range(20):
        rows = _rows(300, 0.5, 0.5, seed=seed)
        iv = compare_online(paired_frame(rows, "1", "2"), "roc_auc", True, "1", "2").interval
        covered.append(iv.low < 0 < iv.high)
    assert sum(covered) >= 16  # a 95% interval: about 19 of 20


def test_too_few_or_one_class_rows_give_no_interval() -> None:
    rows = _rows(20, 0.2, 0.2)
    rows["actual"] = 1.0
    cmp = compare_online(paired_frame(rows, "1", "2"), "roc_auc", True, "1", "2")
    assert cmp.interval is None and cmp.labelled == 20
    check = online_check(OnlineEvidence(min_labelled=10), cmp)
    assert not check.passed and "no roc_auc" in check.detail


def test_with_online_check_promotes_only_if_both_pass_and_keeps_the_comparison() -> None:
    from dataclasses import asdict

    from shelfwise.registry.online import OnlineComparison

    decision = GateDecision(True, ["offline ok"], "2", "1", "roc_auc", {}, {}, None, "fp")
    cmp = compare_online(paired_frame(_rows(400, 0.2, 0.1), "1", "2"), "roc_auc", True, "1", "2")
    failed = with_online_check(decision, Check("online:roc_auc", False, "not yet"), cmp)
    assert not failed.promote and failed.reasons == ["offline ok", "not yet"]
    passed = with_online_check(decision, Check("online:roc_auc", True, "ok"), cmp)
    assert passed.promote and passed.online == cmp and decision.online is None
    # what the promotion outcome carries (asdict) turns back into the same comparison
    assert OnlineComparison.from_dict(asdict(passed)["online"]) == cmp
    assert cmp.interval is not None


# -- alarms ---------------------------------------------------------------------------------


def _champion_rows(n: int, noise: float, errors: int = 0, latency: float = 2.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    p = np.clip(y * 0.6 + 0.2 + rng.normal(0, noise, n), 0, 1)
    rows = pd.DataFrame(
        {
            "prediction_id": [f"p{i}" for i in range(n)],
            "model_version": "5",
            "role": "champion",
            "prediction": p,
            "actual": y,
            "latency_ms": latency,
        }
    )
    bad = pd.DataFrame(
        {"prediction_id": [f"e{i}" for i in range(errors)], "model_version": "5", "role": "error"}
    )
    return pd.concat([rows, bad], ignore_index=True)


ALARMS = AlarmSettings(
    enabled=True,
    min_requests=50,
    min_labelled=50,
    max_error_rate=0.05,
    max_p99_latency_ms=50.0,
    max_metric_drop=0.05,
    cooldown_s=600,
)


def test_error_rate_and_latency_alarms_fire_above_their_limits() -> None:
    quiet = check_alarms(_champion_rows(200, 0.2), "5", ALARMS, "roc_auc", True, None, NOW)
    assert not quiet.fired and quiet.observed["error_rate"] == 0.0
    errors = check_alarms(_champion_rows(200, 0.2, 20), "5", ALARMS, "roc_auc", True, None, NOW)
    assert errors.fired and "error rate" in errors.reasons[0]
    slow = check_alarms(
        _champion_rows(200, 0.2, latency=80), "5", ALARMS, "roc_auc", True, None, NOW
    )
    assert slow.fired and "p99 latency" in slow.reasons[0]
    few = check_alarms(_champion_rows(20, 0.2, 10), "5", ALARMS, "roc_auc", True, None, NOW)
    assert not few.fired  # below min_requests: no verdict
    other = check_alarms(_champion_rows(200, 0.2, 20), "6", ALARMS, "roc_auc", True, None, NOW)
    assert not other.fired  # another version's rows are not this champion's


def test_the_metric_alarm_fires_on_a_worse_champion_and_not_on_a_sound_one() -> None:
    reference = check_alarms(_champion_rows(300, 0.15), "5", ALARMS, "roc_auc", True, None, NOW)
    ref_value = reference_metric(_champion_rows(300, 0.15, seed=9), "roc_auc", 50, 0.5)[0]
    bad = check_alarms(_champion_rows(300, 0.9), "5", ALARMS, "roc_auc", True, ref_value, NOW)
    assert bad.fired and "worse than @previous" in bad.reasons[0]
    # a sound champion, as good as @previous: sampling noise never fires it
    fired = [
        check_alarms(
            _champion_rows(300, 0.15, seed=s), "5", ALARMS, "roc_auc", True, ref_value, NOW
        ).fired
        for s in range(20)
    ]
    assert not any(fired) and not reference.fired


def test_reference_falls_back_to_the_gate_metric() -> None:
    assert reference_metric(_champion_rows(10, 0.1), "roc_auc", 50, 0.71) == (0.71, "gate holdout")
    value, where = reference_metric(_champion_rows(100, 0.1), "roc_auc", 50, 0.71)
    assert value > 0.9 and where.startswith("live")
    assert reference_metric(_champion_rows(10, 0.1), "roc_auc", 50, None) == (None, "none")


def test_cooldown_holds_a_fired_alarm() -> None:
    rows = _champion_rows(200, 0.2, 20)
    last = NOW - timedelta(seconds=100)
    held = check_alarms(rows, "5", ALARMS, "roc_auc", True, None, NOW, last_alarm_at=last)
    assert not held.fired and held.reasons[0].startswith("in cooldown")
    later = NOW - timedelta(seconds=601)
    assert check_alarms(rows, "5", ALARMS, "roc_auc", True, None, NOW, last_alarm_at=later).fired
    assert in_cooldown(NOW, last, 600) and not in_cooldown(NOW, later, 600)
    assert not in_cooldown(NOW, None, 600)


@pytest.mark.parametrize("metric,higher", [("brier", False), ("rmse", False)])
def test_lower_is_better_metrics_are_mirrored(metric: str, higher: bool) -> None:
    ref = reference_metric(_champion_rows(300, 0.15, seed=4), metric, 50, None)[0]
    bad = check_alarms(_champion_rows(300, 0.9), "5", ALARMS, metric, higher, ref, NOW)
    good = check_alarms(_champion_rows(300, 0.15, seed=5), "5", ALARMS, metric, higher, ref, NOW)
    assert bad.fired and not good.fired
