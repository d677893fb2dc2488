"""serving/online.py without a server: the sticky canary split, the canary tag, who answers a
row (with a challenger that raises), and the shadow's bounded queue."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pytest

from shelfwise.configs.online import ChallengerServing
from shelfwise.monitoring.store import PredictionRecord
from shelfwise.serving.follow import AliasFollower
from shelfwise.serving.online import (
    CANARY_ROLE,
    CHAMPION_ROLE,
    ERROR_ROLE,
    SHADOW_ROLE,
    ChallengerState,
    OnlineTask,
    ShadowJob,
    ShadowScorer,
    canary_fraction,
    entity_bucket,
    in_canary,
)


def test_canary_split_is_close_to_the_fraction_and_sticky() -> None:
    ids = [f"order-{i}" for i in range(20_000)]
    for fraction in (0.05, 0.25, 0.5):
        share = np.mean([in_canary(i, fraction, "task_a") for i in ids])
        assert share == pytest.approx(fraction, abs=0.015)
    first = [in_canary(i, 0.3, "task_a") for i in ids[:500]]
    assert first == [in_canary(i, 0.3, "task_a") for i in ids[:500]]  # same id, same side
    # a stable hash, not Python's salted hash(): a known value
    assert entity_bucket("order-1", "task_a") == entity_bucket("order-1", "task_a")
    assert 0.0 <= entity_bucket("order-1", "task_a") < 1.0


def test_raising_the_fraction_only_moves_entities_to_the_challenger() -> None:
    ids = [f"c{i}" for i in range(2000)]
    low = {i for i in ids if in_canary(i, 0.1, "t")}
    high = {i for i in ids if in_canary(i, 0.4, "t")}
    assert low < high
    assert not any(in_canary(i, 0.0, "t") for i in ids)
    assert all(in_canary(i, 1.0, "t") for i in ids)
    assert not in_canary(None, 1.0, "t")  # no id: the champion's
    # another task splits its entities independently
    other = {i for i in ids if in_canary(i, 0.4, "u")}
    assert other != high


def test_canary_tag_overrides_the_declared_fraction_when_valid() -> None:
    assert canary_fraction(0.2, None) == 0.2
    assert canary_fraction(0.2, "0.5") == 0.5
    assert canary_fraction(0.2, "0") == 0.0
    assert canary_fraction(0.2, "1.5") == 0.2
    assert canary_fraction(0.2, "half") == 0.2


@dataclass
class Fake:
    version: str
    offset: float
    registered_name: str = "m"
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    fail: bool = False
    gate: threading.Event | None = None

    def predict_one(self, row):
        return self.predict_many([row])[0]

    def predict_many(self, rows):
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise RuntimeError("challenger broke")
        return np.array([row["x"] + self.offset for row in rows])


def _follower(model):
    follower = AliasFollower("t", "m", "challenger", lambda: model.version, lambda v: model, 3600)
    follower.check()
    return follower


def _task(challenger, fraction=0.5, shadow=True, logged=None):
    settings = ChallengerServing(shadow=shadow, canary_fraction=fraction, queue_size=2)
    sink = logged if logged is not None else []
    return OnlineTask(
        "t", settings, _follower(challenger), ChallengerState(), "p", "default", sink.extend
    )


def _records(scored, ids):
    return [
        PredictionRecord(f"pid-{i}", "m", s.model.version, {"x": 1}, {"p": s.value}, order_id=i)
        for s, i in zip(scored, ids, strict=True)
    ]


def test_canary_rows_go_to_the_challenger_and_the_shadow_scores_the_other() -> None:
    champion, challenger = Fake("1", 0.0), Fake("2", 10.0)
    logged: list[PredictionRecord] = []
    online = _task(challenger, 0.5, logged=logged)
    ids = [f"e{i}" for i in range(40)]
    rows = [{"x": float(i)} for i in range(40)]
    scored = online.score(champion, ids, rows)
    for s, i, row in zip(scored, ids, rows, strict=True):
        canary = in_canary(i, 0.5, "t")
        assert s.role == (CANARY_ROLE if canary else CHAMPION_ROLE)
        assert s.value == row["x"] + (10.0 if canary else 0.0)
    online.shadow(champion, scored, rows, _records(scored, ids))
    assert online.shadow_scorer.join()
    shadows = {r.pair_of: r for r in logged if r.role == SHADOW_ROLE}
    assert set(shadows) == {f"pid-{i}" for i in ids}
    for s, i, row in zip(scored, ids, rows, strict=True):
        other = champion if s.role == CANARY_ROLE else challenger
        assert shadows[f"pid-{i}"].model_version == other.version
        assert shadows[f"pid-{i}"].outputs["p"] == row["x"] + other.offset
    online.stop()


def test_a_challenger_that_raises_leaves_the_answer_to_the_champion() -> None:
    champion, challenger = Fake("1", 0.0), Fake("2", 10.0, fail=True)
    logged: list[PredictionRecord] = []
    online = _task(challenger, 1.0, logged=logged)
    scored = online.score(champion, ["a", "b"], [{"x": 1.0}, {"x": 2.0}])
    assert [s.role for s in scored] == [CHAMPION_ROLE, CHAMPION_ROLE]
    assert [s.value for s in scored] == [1.0, 2.0]
    assert online.canary_errors == 2 and "challenger broke" in online.last_canary_error
    assert [r.role for r in logged] == [ERROR_ROLE, ERROR_ROLE]
    assert {r.model_version for r in logged} == {"2"}
    online.shadow(champion, scored, [{"x": 1.0}, {"x": 2.0}], _records(scored, ["a", "b"]))
    assert online.shadow_scorer.join()
    assert online.status()["shadow"]["errors"] == 2  # the shadow raised too: counted
    online.stop()


def test_no_challenger_when_its_alias_moved_away_or_it_is_the_champion() -> None:
    champion = Fake("1", 0.0)
    online = _task(Fake("2", 10.0), 1.0)
    online.follower.alias_points_to = "3"  # moving to a version that did not load
    assert online.choose(champion, "a") is champion
    online.follower.alias_points_to = "2"
    assert online.choose(champion, "a").version == "2"
    assert online.choose(Fake("2", 0.0), "a").version == "2"  # the champion's version itself
    assert online.challenger(Fake("2", 0.0)) is None
    online.stop()


def test_a_full_shadow_queue_drops_and_counts_never_blocks() -> None:
    gate = threading.Event()
    logged: list[PredictionRecord] = []
    scorer = ShadowScorer("t", logged.extend, queue_size=2)
    slow = Fake("2", 1.0, gate=gate)
    answer = [PredictionRecord("a", "m", "1", {"x": 1.0}, {"p": 1.0})]
    accepted = [scorer.submit(ShadowJob(slow, [{"x": 1.0}], answer, "p")) for _ in range(6)]
    # one job is being scored (blocked), two wait, the rest are dropped
    assert accepted.count(False) >= 3 and scorer.dropped == accepted.count(False)
    gate.set()
    assert scorer.join()
    assert scorer.scored == accepted.count(True) == len(logged)
    scorer.stop()
