"""Online evaluation, wired: the paired live comparison of ``@champion`` and ``@challenger``
(registry/online.py) logged on the challenger's version, as an MLflow run and as an Evidently
report; the gate's online evidence (``GateRule.online``) with the abort of a challenger the live
evidence is against; the canary ramp; and the alarm check that rolls a champion back
(registry/alarms.py). Each step is a plain function; ``online_compare_flow`` and
``alarm_check_flow`` are their Prefect flows, ``shelfwise online|canary|alarms`` their verbs.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import flow

from shelfwise.configs.gate import GateRule
from shelfwise.configs.platform import PlatformConfig, load_platform_config
from shelfwise.configs.tasks import TaskDeclaration, TaskKind, gate_rule, load_task
from shelfwise.monitoring.store import PredictionStore
from shelfwise.registry import aliases as al
from shelfwise.registry import online as ro
from shelfwise.registry.alarms import AlarmVerdict, check_alarms, reference_metric
from shelfwise.registry.gate import GateDecision, higher_is_better
from shelfwise.registry.history import HistoryStore
from shelfwise.registry.promotion import Evaluate, default_actor, rollback
from shelfwise.registry.reference import gate_metrics

logger = logging.getLogger(__name__)

ALARM_ACTOR = "shelfwise-alarms"


def _tenant(task: TaskDeclaration) -> str | None:
    from shelfwise.flows.monitor import task_tenant

    return task_tenant(task.name)


def live_rows(
    platform: PlatformConfig,
    task: TaskDeclaration,
    since: datetime | None = None,
    version: str | None = None,
) -> pd.DataFrame:
    """The task's store rows, every role (``PredictionStore.online_rows``)."""
    store = PredictionStore(platform.store_url)
    try:
        return store.online_rows(
            task.registered_model, task.prediction_field, since, _tenant(task), version
        )
    finally:
        store.dispose()


def live_comparison(
    platform: PlatformConfig,
    task: TaskDeclaration,
    rule: GateRule,
    champion: str,
    challenger: str,
    now: datetime | None = None,
) -> tuple[pd.DataFrame, ro.OnlineComparison]:
    """(paired rows, comparison) of two versions on the task's labelled live requests."""
    window = rule.online.window_s if rule.online is not None else None
    since = (now or datetime.now(UTC)) - timedelta(seconds=window) if window else None
    pairs = ro.paired_frame(live_rows(platform, task, since), champion, challenger)
    metric = rule.primary.metric
    higher = higher_is_better(metric, rule.primary.higher_is_better)
    return pairs, ro.compare_online(pairs, metric, higher, champion, challenger, rule.bootstrap)


def compare_live(platform: PlatformConfig, task_ref: str, log: bool = True) -> dict[str, Any]:
    """Compare ``@champion`` and the task's challenger alias on live traffic; with ``log``,
    tag the challenger's version, log an MLflow run (metrics + the Evidently paired report)
    in experiment ``online-<task>`` and add the report to the task's Evidently project."""
    from shelfwise.registry.tracking import ensure_tracking_uri

    task = load_task(task_ref)
    rule = gate_rule(task)
    mlflow.set_tracking_uri(ensure_tracking_uri(platform))
    client = mlflow.MlflowClient()
    name = task.registered_model
    champion = al.alias_version(client, name, al.CHAMPION)
    challenger = al.alias_version(client, name, task.serving.challenger.alias)
    if champion is None or challenger is None or champion == challenger:
        raise al.RegistryError(
            f"{name}: nothing to compare (@champion {champion}, "
            f"@{task.serving.challenger.alias} {challenger})"
        )
    pairs, comparison = live_comparison(platform, task, rule, champion, challenger)
    out: dict[str, Any] = {"task": task.name, "model_name": name, **comparison.as_dict()}
    if rule.online is not None:
        check = ro.online_check(rule.online, comparison)
        out["check"] = {"passed": check.passed, "detail": check.detail}
    if log:
        ro.tag_comparison(client, name, comparison)
        if len(pairs) >= 2:
            out["run_id"] = _log_comparison(platform, task, comparison, pairs)
    return out


def _log_comparison(
    platform: PlatformConfig,
    task: TaskDeclaration,
    comparison: ro.OnlineComparison,
    pairs: pd.DataFrame,
) -> str:
    from shelfwise.configs.tasks import monitoring_config
    from shelfwise.monitoring.paired import paired_report
    from shelfwise.monitoring.workspace import add_snapshots
    from shelfwise.registry import log as rlog

    experiment = rlog.get_or_create_experiment(f"online-{task.name}")
    metric = comparison.metric
    values = {"labelled": float(comparison.labelled)}
    if comparison.champion_value is not None:
        values[f"champion_{metric}"] = comparison.champion_value
    if comparison.challenger_value is not None:
        values[f"challenger_{metric}"] = comparison.challenger_value
    if comparison.interval is not None:
        iv = comparison.interval
        values.update(improvement=iv.improvement, interval_low=iv.low, interval_high=iv.high)
    snapshot = None
    if task.kind is not TaskKind.forecast:
        try:
            snapshot = paired_report(pairs, task.kind.value)
        except Exception as exc:  # the numbers are the record; the report is a view
            logger.warning("no Evidently paired report for %s: %s", task.name, exc)
    run_name = f"online-v{comparison.challenger_version}-vs-v{comparison.champion_version}"
    with rlog.tracked_run(
        experiment_id=experiment, run_name=f"{run_name}-{time.strftime('%H%M%S')}"
    ) as run:
        mlflow.set_tags(
            {
                rlog.TAG_TASK: task.name,
                "shelfwise.online.champion_version": comparison.champion_version,
                "shelfwise.online.challenger_version": comparison.challenger_version,
            }
        )
        mlflow.log_metrics(values)
        mlflow.log_dict(comparison.as_dict(), "online_comparison.json")
        if snapshot is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "paired_report.html"
                snapshot.save_html(str(path))
                mlflow.log_artifact(str(path), "reports")
    if snapshot is not None:
        try:
            cfg = monitoring_config(task)
            add_snapshots(
                platform.state_path / "evidently",
                cfg.evidently_project,
                cfg.prediction_column,
                [snapshot],
                name=f"online v{comparison.challenger_version} vs v{comparison.champion_version}",
            )
        except Exception as exc:
            logger.warning("paired report not added to the Evidently workspace: %s", exc)
    return run.info.run_id


# -- the gate with online evidence -----------------------------------------------------------


def online_evaluator(
    platform: PlatformConfig,
    task: TaskDeclaration,
    rule: GateRule,
    offline: Evaluate,
) -> Evaluate:
    """``offline`` plus the rule's online check (a first version has nothing to pair with:
    the offline decision alone); the decision carries the comparison (``online``)."""

    def evaluate(candidate: str, champion: str | None) -> GateDecision:
        decision = offline(candidate, champion)
        if champion is None or rule.online is None:
            return decision
        _, comparison = live_comparison(platform, task, rule, champion, candidate)
        check = ro.online_check(rule.online, comparison)
        return ro.with_online_check(decision, check, comparison)

    return evaluate


def settle_online(
    platform: PlatformConfig,
    client: mlflow.MlflowClient,
    model_name: str,
    rule: GateRule,
    outcome: dict[str, Any],
    trigger: str,
    actor: str | None,
) -> dict[str, Any] | None:
    """After an online-gated decision (``outcome``, a PromotionOutcome as a dict): tag its
    comparison on the candidate, and when it was refused on enough evidence against it, abort
    the challenger (recorded)."""
    judged = (outcome.get("gate") or {}).get("online")
    if judged is None or rule.online is None:
        return None
    comparison = ro.OnlineComparison.from_dict(judged)
    ro.tag_comparison(client, model_name, comparison)
    out: dict[str, Any] = {"comparison": comparison.as_dict(), "aborted": False}
    if not outcome["promoted"] and ro.evidence_against(rule.online, comparison):
        store = HistoryStore.from_url(platform.store_url)
        try:
            out["abort_history_id"] = ro.abort_challenger(
                client,
                store,
                model_name,
                comparison.challenger_version,
                ro.online_check(rule.online, comparison).detail,
                actor or default_actor(),
                trigger,
                {"online": comparison.as_dict()},
            )
        finally:
            store.dispose()
        out["aborted"] = True
    return out


def set_canary(platform: PlatformConfig, task_ref: str, fraction: float) -> dict[str, Any]:
    """Ramp the canary: the fraction of entities the task's challenger answers, as its
    version's tag (the service reads it on its next alias poll)."""
    from shelfwise.registry.tracking import ensure_tracking_uri

    task = load_task(task_ref)
    mlflow.set_tracking_uri(ensure_tracking_uri(platform))
    client = mlflow.MlflowClient()
    alias = task.serving.challenger.alias
    version = al.alias_version(client, task.registered_model, alias)
    if version is None:
        raise al.RegistryError(f"{task.registered_model} has no @{alias}: no canary to ramp")
    ro.set_canary_fraction(client, task.registered_model, version, fraction)
    return {"task": task.name, "version": version, "canary_fraction": fraction}


# -- alarms ---------------------------------------------------------------------------------


def last_alarm_at(store: HistoryStore, model_name: str) -> datetime | None:
    for entry in reversed(store.entries(model_name)):
        if entry.action == "rollback" and entry.trigger == "alarm":
            at = entry.created_at
            return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at
    return None


def check_task_alarms(
    platform: PlatformConfig,
    task_ref: str,
    act: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Judge the champion's live window by the task's alarms; on a fired verdict (and
    ``act``) roll back to ``@previous`` with the reasons recorded (trigger ``alarm``); the
    cooldown then holds further alarms."""
    from shelfwise.registry.tracking import ensure_tracking_uri

    task = load_task(task_ref)
    settings = task.alarms
    now = now or datetime.now(UTC)
    mlflow.set_tracking_uri(ensure_tracking_uri(platform))
    client = mlflow.MlflowClient()
    name = task.registered_model
    champion = al.alias_version(client, name, al.CHAMPION)
    out: dict[str, Any] = {"task": task.name, "model_name": name, "champion": champion}
    if champion is None:
        return {**out, "fired": False, "reasons": ["no @champion"], "rolled_back": False}
    metric = task.metric
    higher = higher_is_better(metric)
    previous = al.alias_version(client, name, al.PREVIOUS)
    reference, source = None, "none"
    if previous is not None and previous != champion:
        prev_rows = live_rows(platform, task, version=previous)
        gated = gate_metrics(client.get_model_version(name, previous).tags).get(metric)
        reference, source = reference_metric(prev_rows, metric, settings.min_labelled, gated)
    rows = live_rows(platform, task, now - timedelta(seconds=settings.window_s), champion)
    store = HistoryStore.from_url(platform.store_url)
    try:
        verdict: AlarmVerdict = check_alarms(
            rows, champion, settings, metric, higher, reference, now, last_alarm_at(store, name)
        )
        out.update(verdict.as_dict(), previous=previous, reference_source=source)
        out["rolled_back"] = False
        if verdict.fired and act and settings.enabled:
            try:
                outcome = rollback(
                    client,
                    store,
                    name,
                    reason="alarm: " + "; ".join(verdict.reasons),
                    actor=ALARM_ACTOR,
                    trigger="alarm",
                )
            except al.RegistryError as exc:  # e.g. no @previous: reported, nothing moved
                out["rollback_error"] = str(exc)
            else:
                out["rolled_back"] = True
                out["rollback"] = outcome.as_dict()
    finally:
        store.dispose()
    return out


@flow(name="online-compare")
def online_compare_flow(task: str, platform_config: str = "platform") -> dict[str, Any]:
    """Compare the task's challenger with its champion on labelled live requests (paired)."""
    return compare_live(load_platform_config(platform_config), task)


@flow(name="alarm-check")
def alarm_check_flow(task: str, platform_config: str = "platform") -> dict[str, Any]:
    """The task's alarms on its champion's live window; roll back when one fires."""
    return check_task_alarms(load_platform_config(platform_config), task)
