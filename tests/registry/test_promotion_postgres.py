"""Concurrent promotions against a PostgreSQL history store (real server, real registry)."""

from __future__ import annotations

import threading

import mlflow
import pytest

from shelfwise.registry import aliases as al
from shelfwise.registry.history import HistoryStore
from shelfwise.registry.promotion import gate_and_promote, promote_manual

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]


def _run_concurrently(fns) -> list[BaseException]:
    barrier = threading.Barrier(len(fns))
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            barrier.wait()
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return errors


def _assert_chain(client, name, hist):
    """Each event starts from the champion the previous one left; aliases match the last."""
    for before, after in zip(hist, hist[1:], strict=False):
        assert after.from_version == before.champion_after, [e.as_dict() for e in hist]
    assert al.alias_version(client, name, al.CHAMPION) == hist[-1].champion_after
    promoted = [e for e in hist if e.promoted]
    if len(promoted) > 1:
        assert al.alias_version(client, name, al.PREVIOUS) == promoted[-1].from_version


def test_concurrent_manual_promotions_keep_one_chain_and_every_row(
    mlflow_server, fresh_model, pg_database
):
    name, _ = fresh_model(*["default"] * 5)
    store = HistoryStore.from_url(pg_database)
    try:
        client = mlflow.MlflowClient(mlflow_server)
        promote_manual(client, store, name, "1", "seed", actor="pytest")
        racers = [
            (lambda v=v: promote_manual(mlflow.MlflowClient(mlflow_server), store, name, v, "race"))
            for v in ("2", "3", "4", "5")
        ]
        assert _run_concurrently(racers) == []
        hist = store.entries(name)
        assert len(hist) == 5  # no lost row
        assert sorted(e.to_version for e in hist[1:]) == ["2", "3", "4", "5"]
        _assert_chain(client, name, hist)
    finally:
        store.dispose()


def test_concurrent_gates_re_evaluate_against_the_new_champion(
    mlflow_server, fresh_model, pg_database, evaluator
):
    """Two identical better challengers gated at once against the same champion: one wins; the
    other, re-run against the new champion (its twin), is refused. Without the lock and re-check
    both would be promoted on a comparison with a champion that is no longer there."""
    name, v = fresh_model("default", "better", "better")
    a, b = v["better"], v["better#2"]
    store = HistoryStore.from_url(pg_database)
    try:
        client = mlflow.MlflowClient(mlflow_server)
        promote_manual(client, store, name, v["default"], "seed", actor="pytest")
        racers = [
            (
                lambda c=c: gate_and_promote(
                    mlflow.MlflowClient(mlflow_server),
                    store,
                    name,
                    c,
                    evaluator(mlflow.MlflowClient(mlflow_server), name),
                )
            )
            for c in (a, b)
        ]
        assert _run_concurrently(racers) == []
        hist = store.entries(name)
        assert len(hist) == 3
        assert [e.decision for e in hist[1:]] == ["promoted", "refused"]
        winner, loser = hist[1], hist[2]
        assert {winner.to_version, loser.to_version} == {a, b}
        assert loser.from_version == winner.to_version  # judged against the new champion
        _assert_chain(client, name, hist)
        assert al.alias_version(client, name, al.PREVIOUS) == v["default"]
    finally:
        store.dispose()
