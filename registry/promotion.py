"""Decide-and-move: run the gate, then, holding the model's promotion lock, check that the
champion it compared against is still the champion, record the decision and move the aliases.

Order inside the locked transaction: insert the history row, then move the aliases, then commit.
If moving fails (or the process dies) the transaction rolls back, so there is no history row for
a move that did not happen, and ``@champion`` is where it was (see registry/aliases.py). The
version tags ``shelfwise.promotion.*`` are written after the commit; they are a convenience copy
of the history row, which is the record.

Scoring happens *outside* the lock (it takes seconds and the store may be the SQLite file the
serving process logs predictions to); if another promotion moved ``@champion`` meanwhile, the
decision is stale and the gate is re-run against the new champion.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shelfwise.registry import aliases as al
from shelfwise.registry.history import TRIGGERS, HistoryEntry, HistoryStore

if TYPE_CHECKING:  # promote / rollback on the CLI need neither scikit-learn nor the gate
    from mlflow import MlflowClient

    from shelfwise.registry.gate import GateDecision

logger = logging.getLogger(__name__)

TAG_PREFIX = "shelfwise.promotion."
Evaluate = Callable[[str, str | None], "GateDecision"]  # (candidate, champion) -> decision


@dataclass
class PromotionOutcome:
    model_name: str
    action: str
    decision: str
    promoted: bool
    candidate: str
    champion_before: str | None
    champion_after: str | None
    reasons: list[str]
    history_id: int
    gate: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_entry(
        cls,
        entry: HistoryEntry,
        history_id: int,
        reasons: list[str] | None = None,
        gate: dict[str, Any] | None = None,
    ) -> PromotionOutcome:
        """The outcome is what the recorded history row says (one source for both)."""
        return cls(
            model_name=entry.model_name,
            action=entry.action,
            decision=entry.decision,
            promoted=entry.promoted,
            candidate=str(entry.to_version),
            champion_before=entry.from_version,
            champion_after=entry.champion_after,
            reasons=reasons if reasons is not None else [entry.reason],
            history_id=history_id,
            gate=gate,
        )


def default_actor() -> str:
    """Who is acting: ``SHELFWISE_ACTOR`` if set, else the OS user."""
    env = os.environ.get("SHELFWISE_ACTOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def check_trigger(trigger: str) -> None:
    """Flows call this before training, so a bad trigger fails before anything is registered."""
    if trigger not in TRIGGERS:
        raise al.RegistryError(f"unknown trigger {trigger!r}; one of {list(TRIGGERS)}")


def _gate_metrics(decision: GateDecision) -> dict[str, Any]:
    return {
        "challenger": decision.challenger_metrics,
        "champion": decision.champion_metrics,
        "checks": [asdict(c) for c in decision.checks],
        **({"baselines": decision.baselines} if decision.baselines else {}),
    }


def _version_metrics(client: MlflowClient, model_name: str, version: str) -> dict[str, float]:
    tags = client.get_model_version(model_name, version).tags
    out = {}
    for k, v in tags.items():
        if k.startswith("metric."):
            try:
                out[k.removeprefix("metric.")] = float(v)
            except ValueError:
                continue
    return out


def gate_and_promote(
    client: MlflowClient,
    store: HistoryStore,
    model_name: str,
    candidate: str,
    evaluate: Evaluate,
    trigger: str = "manual",
    actor: str | None = None,
    max_attempts: int = 3,
) -> PromotionOutcome:
    """Gate ``candidate`` against the current ``@champion``; promote it if the gate says so.

    ``evaluate(candidate_version, champion_version_or_None)`` scores both and returns the
    GateDecision. Every decision, refusals included, is recorded.
    """
    check_trigger(trigger)
    actor = actor or default_actor()
    mv = al.resolve_version(client, model_name, candidate)
    candidate = str(mv.version)
    for attempt in range(1, max_attempts + 1):
        champion = al.alias_version(client, model_name, al.CHAMPION)
        if champion == candidate:
            raise al.RegistryError(f"{model_name} version {candidate} is already @champion")
        decision = evaluate(candidate, champion)
        with store.model_lock(model_name) as conn:
            current = al.alias_version(client, model_name, al.CHAMPION)
            if current != champion:
                logger.info(
                    "%s: @champion moved %s -> %s during evaluation; re-running the gate "
                    "(attempt %s)",
                    model_name,
                    champion,
                    current,
                    attempt,
                )
                continue
            entry = HistoryEntry(
                model_name=model_name,
                action="gate",
                decision="promoted" if decision.promote else "refused",
                promoted=decision.promote,
                to_version=candidate,
                from_version=champion,
                champion_after=candidate if decision.promote else champion,
                reason="; ".join(decision.reasons),
                trigger=trigger,
                actor=actor,
                primary_metric=decision.primary_metric,
                interval_low=decision.interval.low if decision.interval else None,
                interval_high=decision.interval.high if decision.interval else None,
                metrics=_gate_metrics(decision),
                eval_fingerprint=decision.eval_fingerprint,
                created_at=datetime.now(UTC),
            )
            history_id = store.record(conn, entry)
            if decision.promote:
                al.move_champion(client, model_name, candidate)
                al.clear_challenger_if(client, model_name, candidate)
        _tag_decision(client, entry, history_id, decision)
        return PromotionOutcome.from_entry(
            entry, history_id, reasons=decision.reasons, gate=decision.as_dict()
        )
    raise al.RegistryError(
        f"{model_name}: @champion kept moving while the gate ran ({max_attempts} attempts); "
        "nothing was changed by this run"
    )


def promote_manual(
    client: MlflowClient,
    store: HistoryStore,
    model_name: str,
    version: str,
    reason: str,
    actor: str | None = None,
    trigger: str = "manual",
) -> PromotionOutcome:
    """Recorded manual override: make ``version`` the champion without the gate."""
    check_trigger(trigger)
    if not reason or not reason.strip():
        raise al.RegistryError("a manual promotion needs a --reason")
    actor = actor or default_actor()
    mv = al.resolve_version(client, model_name, version)
    version = str(mv.version)
    with store.model_lock(model_name) as conn:
        champion = al.alias_version(client, model_name, al.CHAMPION)
        if champion == version:
            raise al.RegistryError(f"{model_name} version {version} is already @champion")
        entry = HistoryEntry(
            model_name=model_name,
            action="manual",
            decision="promoted",
            promoted=True,
            to_version=version,
            from_version=champion,
            champion_after=version,
            reason=f"manual override: {reason.strip()}",
            trigger=trigger,
            actor=actor,
            metrics={"challenger": _version_metrics(client, model_name, version)},
            created_at=datetime.now(UTC),
        )
        history_id = store.record(conn, entry)
        al.move_champion(client, model_name, version)
        al.clear_challenger_if(client, model_name, version)
    _tag_decision(client, entry, history_id, None)
    return PromotionOutcome.from_entry(entry, history_id)


def rollback(
    client: MlflowClient,
    store: HistoryStore,
    model_name: str,
    reason: str = "",
    actor: str | None = None,
    trigger: str = "manual",
) -> PromotionOutcome:
    """``@champion`` back to ``@previous``, recorded."""
    check_trigger(trigger)
    actor = actor or default_actor()
    al.require_model(client, model_name)
    with store.model_lock(model_name) as conn:
        champion, previous = al.plan_rollback(client, model_name)
        entry = HistoryEntry(
            model_name=model_name,
            action="rollback",
            decision="rolled_back",
            promoted=True,
            to_version=previous,
            from_version=champion,
            champion_after=previous,
            reason=f"rollback: {reason.strip() or 'no reason given'}",
            trigger=trigger,
            actor=actor,
            created_at=datetime.now(UTC),
        )
        history_id = store.record(conn, entry)
        al.apply_rollback(client, model_name, champion, previous)
    _tag_decision(client, entry, history_id, None)
    return PromotionOutcome.from_entry(entry, history_id)


def _tag_decision(
    client: MlflowClient, entry: HistoryEntry, history_id: int, decision: GateDecision | None
) -> None:
    """Copy the decision onto the version it concerns as ``shelfwise.promotion.*`` tags."""
    tags = {
        "decision": entry.decision,
        "action": entry.action,
        "decided_at": (entry.created_at or datetime.now(UTC)).isoformat(),
        "trigger": entry.trigger,
        "actor": entry.actor,
        "reason": entry.reason[:4000],
        "champion_before": entry.from_version or "",
        "champion_after": entry.champion_after or "",
        "history_id": str(history_id),
    }
    if decision is not None:
        tags["eval_fingerprint"] = decision.eval_fingerprint
        tags["primary_metric"] = decision.primary_metric
        if decision.interval is not None:
            iv = decision.interval
            tags["improvement"] = f"{iv.improvement:.6f}"
            tags["interval"] = f"[{iv.low:.6f}, {iv.high:.6f}] @ {iv.confidence}"
        for k, v in decision.challenger_metrics.items():
            tags[f"metric.{k}"] = f"{v:.6f}"
        if decision.champion_metrics:
            for k, v in decision.champion_metrics.items():
                tags[f"champion_metric.{k}"] = f"{v:.6f}"
        for fam, metrics in (decision.baselines or {}).items():
            for k, v in metrics.items():
                tags[f"baseline.{fam}.{k}"] = f"{v:.6f}"
    try:
        for k, v in tags.items():
            client.set_model_version_tag(entry.model_name, entry.to_version, TAG_PREFIX + k, v)
    except Exception as exc:  # the history row is the record; tags are a copy
        logger.warning(
            "decision %s recorded (history id %s) but tagging %s v%s failed: %s",
            entry.decision,
            history_id,
            entry.model_name,
            entry.to_version,
            exc,
        )


def version_rows(client: MlflowClient, model_name: str) -> list[dict[str, Any]]:
    """Every version of ``model_name``, oldest first: aliases, gate metrics (``metric.*`` tags),
    the latest promotion decision and reason, evaluation fingerprint and trigger. What
    ``shelfwise compare`` and the demo's summary show."""
    from shelfwise.registry.reference import gate_metrics

    by_version: dict[str, list[str]] = {}
    for alias, v in al.aliases_of(client, model_name).items():
        by_version.setdefault(v, []).append(alias)
    versions = client.search_model_versions(f"name='{model_name}'")
    return [
        {
            "version": str(mv.version),
            "aliases": sorted(by_version.get(str(mv.version), [])),
            "metrics": gate_metrics(mv.tags),
            "decision": mv.tags.get(TAG_PREFIX + "decision"),
            "reason": mv.tags.get(TAG_PREFIX + "reason"),
            "eval_fingerprint": mv.tags.get("shelfwise.eval_fingerprint"),
            "trigger": mv.tags.get("shelfwise.trigger"),
            "family": mv.tags.get("shelfwise.model_family"),
            "task": mv.tags.get("shelfwise.task"),
        }
        for mv in sorted(versions, key=lambda mv: int(mv.version))
    ]


def task_rows(client: MlflowClient | None, tasks: list[Any]) -> list[dict[str, Any]]:
    """One row per declared task: kind, model, candidates, and (with a client) the champion's
    version, family and selection metric. What ``shelfwise tasks`` shows."""
    from shelfwise.registry.reference import gate_metrics

    rows = []
    for task in tasks:
        row: dict[str, Any] = {
            "task": task.name,
            "kind": task.kind.value,
            "model": task.registered_model,
            "candidates": task.families,
            "metric": task.metric,
            "champion": None,
            "family": None,
            "metric_value": None,
        }
        version = al.alias_version(client, task.registered_model, al.CHAMPION) if client else None
        if version is not None:
            mv = client.get_model_version(task.registered_model, version)
            row["champion"] = str(mv.version)
            row["family"] = mv.tags.get("shelfwise.model_family")
            row["metric_value"] = gate_metrics(mv.tags).get(task.metric)
        rows.append(row)
    return rows
