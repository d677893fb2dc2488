"""Gate + aliases + history against the real `mlflow server` and real registered versions."""

from __future__ import annotations

import mlflow
import pytest

from shelfwise.registry import aliases as al
from shelfwise.registry.promotion import TAG_PREFIX, gate_and_promote, promote_manual, rollback

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _state(client, store, name):
    return al.aliases_of(client, name), [e.id for e in store.entries(name)]


def test_gate_refuses_weak_promotes_better_rollback_and_history(
    mlflow_server, fresh_model, sqlite_store, evaluator
):
    client = mlflow.MlflowClient(mlflow_server)
    name, v = fresh_model("weak", "default", "weak", "better")
    weak1, default, weak2, better = v["weak"], v["default"], v["weak#2"], v["better"]

    def gate(candidate, trigger="manual"):
        return gate_and_promote(
            client,
            sqlite_store,
            name,
            candidate,
            evaluator(client, name),
            trigger=trigger,
            actor="pytest",
        )

    # first version, below the ROC-AUC floor: no champion is better than a bad one
    first = gate(weak1)
    assert not first.promoted and al.alias_version(client, name, al.CHAMPION) is None
    assert any("not >= 0.7" in r for r in first.reasons)

    # first version passing the floors becomes champion
    assert gate(default).promoted
    assert al.alias_version(client, name, al.CHAMPION) == default

    # deliberately weakened challenger: refused, champion untouched, refusal recorded
    al.set_challenger(client, name, weak2)
    refused = gate("challenger", trigger="schedule")
    assert refused.decision == "refused" and not refused.promoted
    assert al.alias_version(client, name, al.CHAMPION) == default
    assert al.alias_version(client, name, al.CHALLENGER) == weak2
    failed = {c["name"] for c in refused.gate["checks"] if not c["passed"]}
    assert {"primary:roc_auc", "guardrail:brier", "guardrail:ece"} <= failed
    tags = client.get_model_version(name, weak2).tags
    assert tags[TAG_PREFIX + "decision"] == "refused"
    assert tags[TAG_PREFIX + "trigger"] == "schedule"
    assert tags[TAG_PREFIX + "champion_before"] == default

    # genuinely better challenger: promoted, CI of the ROC-AUC gain above zero
    al.set_challenger(client, name, better)
    won = gate("challenger")
    assert won.promoted and won.gate["interval"]["low"] > 0
    assert al.alias_version(client, name, al.CHAMPION) == better
    assert al.alias_version(client, name, al.PREVIOUS) == default
    assert al.alias_version(client, name, al.CHALLENGER) is None  # it is the champion now

    # rollback restores the previous champion, recorded too
    rb = rollback(client, sqlite_store, name, reason="pager says so", actor="pytest")
    assert rb.champion_after == default
    assert al.alias_version(client, name, al.CHAMPION) == default
    assert al.alias_version(client, name, al.PREVIOUS) == better

    hist = sqlite_store.entries(name)
    assert [
        (e.action, e.decision, e.from_version, e.to_version, e.champion_after) for e in hist
    ] == [
        ("gate", "refused", None, weak1, None),
        ("gate", "promoted", None, default, default),
        ("gate", "refused", default, weak2, default),
        ("gate", "promoted", default, better, better),
        ("rollback", "rolled_back", better, default, default),
    ]
    assert [e.trigger for e in hist] == ["manual", "manual", "schedule", "manual", "manual"]
    assert hist[3].interval_low is not None and hist[3].interval_low > 0
    assert hist[3].metrics["challenger"]["roc_auc"] > hist[3].metrics["champion"]["roc_auc"]
    assert hist[2].eval_fingerprint == hist[3].eval_fingerprint
    assert all(a.created_at <= b.created_at for a, b in zip(hist, hist[1:], strict=False))


def test_bad_version_or_other_model_fails_clearly_and_changes_nothing(
    mlflow_server, fresh_model, sqlite_store, evaluator
):
    client = mlflow.MlflowClient(mlflow_server)
    name, v = fresh_model("default", "better")
    other, ov = fresh_model("weak")
    promote_manual(client, sqlite_store, name, v["default"], "bootstrap", actor="pytest")
    before = _state(client, sqlite_store, name)

    cases = [
        (lambda: promote_manual(client, sqlite_store, name, "99", "x"), "no version 99"),
        (
            lambda: promote_manual(client, sqlite_store, name, f"models:/{other}/1", "x"),
            f"belongs to registered model '{other}'",
        ),
        (lambda: promote_manual(client, sqlite_store, "no_such_model", "1", "x"), "no registered"),
        (lambda: promote_manual(client, sqlite_store, name, v["better"], "  "), "needs a --reason"),
        (lambda: promote_manual(client, sqlite_store, name, v["default"], "x"), "already"),
        (
            lambda: gate_and_promote(client, sqlite_store, name, "42", evaluator(client, name)),
            "no version 42",
        ),
        (lambda: gate_and_promote(client, sqlite_store, name, "@nope", None), "no alias @nope"),
        (
            lambda: promote_manual(client, sqlite_store, name, v["better"], "x", trigger="cron"),
            "unknown trigger",
        ),
    ]
    for call, message in cases:
        with pytest.raises(al.RegistryError, match=message):
            call()
        assert _state(client, sqlite_store, name) == before
    # rollback with no @previous: refused, nothing changed
    with pytest.raises(al.RegistryError, match="no @previous"):
        rollback(client, sqlite_store, name)
    assert _state(client, sqlite_store, name) == before
    assert al.aliases_of(client, other) == {} and ov


def test_crash_between_evaluating_and_moving_aliases_keeps_the_champion(
    mlflow_server, fresh_model, sqlite_store, evaluator, monkeypatch
):
    client = mlflow.MlflowClient(mlflow_server)
    name, v = fresh_model("default", "better")
    promote_manual(client, sqlite_store, name, v["default"], "bootstrap", actor="pytest")
    before = _state(client, sqlite_store, name)
    real_set = client.set_registered_model_alias

    def crash_on_champion(model, alias, version):
        if alias == al.CHAMPION:  # the worst moment: @previous has already moved
            raise KeyboardInterrupt("simulated crash")
        return real_set(model, alias, version)

    monkeypatch.setattr(client, "set_registered_model_alias", crash_on_champion)
    with pytest.raises(KeyboardInterrupt):
        gate_and_promote(client, sqlite_store, name, v["better"], evaluator(client, name))
    monkeypatch.undo()
    assert al.alias_version(client, name, al.CHAMPION) == v["default"]
    assert _state(client, sqlite_store, name) == before  # no row for a move that did not happen
    # and the gate still works afterwards
    out = gate_and_promote(client, sqlite_store, name, v["better"], evaluator(client, name))
    assert out.promoted and al.alias_version(client, name, al.CHAMPION) == v["better"]


def test_concurrent_manual_promotions_on_sqlite_keep_one_chain(
    mlflow_server, fresh_model, sqlite_store
):
    """The SQLite path of the lock (BEGIN IMMEDIATE): same guarantees as on PostgreSQL."""
    import threading

    client = mlflow.MlflowClient(mlflow_server)
    name, _ = fresh_model(*["default"] * 4)
    promote_manual(client, sqlite_store, name, "1", "seed", actor="pytest")
    barrier, errors = threading.Barrier(3), []

    def race(version: str) -> None:
        barrier.wait()
        try:
            promote_manual(mlflow.MlflowClient(mlflow_server), sqlite_store, name, version, "race")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(v,)) for v in ("2", "3", "4")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    hist = sqlite_store.entries(name)
    assert sorted(e.to_version for e in hist) == ["1", "2", "3", "4"]
    for before, after in zip(hist, hist[1:], strict=False):
        assert after.from_version == before.champion_after
    assert al.alias_version(client, name, al.CHAMPION) == hist[-1].champion_after
    assert al.alias_version(client, name, al.PREVIOUS) == hist[-1].from_version
