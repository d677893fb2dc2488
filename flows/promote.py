"""Prefect flow ``gate-and-promote``: wires the gate (registry/gate.py), the aliases
(registry/aliases.py) and the history (registry/history.py) via registry/promotion.py."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import flow

from shelfwise.configs.gate import GateRule
from shelfwise.configs.platform import PlatformConfig, load_platform_config
from shelfwise.configs.tasks import (
    TaskDeclaration,
    TaskKind,
    gate_rule,
    load_task,
    task_names,
    training_config,
)
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.registry import forecast_gate as fgate
from shelfwise.registry import gate as rgate
from shelfwise.registry import log as rlog
from shelfwise.registry.aliases import CHAMPION, RegistryError, resolve_version
from shelfwise.registry.history import HistoryStore
from shelfwise.registry.promotion import Evaluate, gate_and_promote
from shelfwise.registry.tracking import ensure_tracking_uri

logger = logging.getLogger(__name__)


def tabular_evaluator(
    client: mlflow.MlflowClient,
    model_name: str,
    eval_set: rgate.EvalSet,
    rule,
    naive: str | None = None,
) -> Evaluate:
    """``evaluate(candidate, champion)`` for the tabular kinds: score both versions (classifier
    probabilities or regressor predictions) on ``eval_set`` and decide. ``naive`` names the
    kind's naive baseline (``prevalence``, ``mean``): the training split's target mean on every
    row, which the rule's ``baseline`` requirement makes a first version beat."""

    def evaluate(candidate: str, champion: str | None) -> rgate.GateDecision:
        cand = client.get_model_version(model_name, candidate)
        challenger_pred = rgate.score_tabular(f"models:/{model_name}/{candidate}", eval_set.X)
        champion_pred = champion_fp = None
        if champion is not None:
            champ = client.get_model_version(model_name, champion)
            champion_fp = champ.tags.get(rlog.TAG_EVAL_FINGERPRINT)
            # pinned to the version read under the alias, not the alias itself, so the
            # decision names exactly what was scored
            champion_pred = rgate.score_tabular(f"models:/{model_name}/{champion}", eval_set.X)
        naive_pred = eval_set.naive_predictions()
        baselines = {naive: naive_pred} if naive and naive_pred is not None else None
        decision = rgate.decide(
            rule,
            eval_set.y,
            challenger_pred,
            champion_pred,
            candidate,
            champion,
            eval_set.fingerprint,
            cand.tags.get(rlog.TAG_EVAL_FINGERPRINT),
            champion_fp,
            baselines=baselines,
            naive=naive,
        )
        logger.info(
            "gate %s v%s vs @%s=%s: %s (%s)",
            model_name,
            candidate,
            CHAMPION,
            champion,
            "promote" if decision.promote else "refuse",
            "; ".join(decision.reasons),
        )
        return decision

    return evaluate


def forecast_evaluator(
    client: mlflow.MlflowClient, model_name: str, key_columns: list[str], rule
) -> Evaluate:
    """``evaluate(candidate, champion)`` for forecasters of any family: the candidate's stored
    holdout (its latest backtest fold, or the gate fold) is the evaluation set; the champion's
    pyfunc forecasts the same rows when it is comparable (registry/forecast_gate.py). The
    seasonal naive's backtest forecasts on those rows are the naive baseline every version,
    the first one included, must beat; the other families' are reported beside."""

    def evaluate(candidate: str, champion: str | None) -> rgate.GateDecision:
        cand = client.get_model_version(model_name, candidate)
        eval_set = fgate.load_eval_set(client, cand.run_id, key_columns)
        champion_pred = comparable = None
        fresher = False
        if champion is not None:
            champ = client.get_model_version(model_name, champion)
            champ_end = champ.tags.get(fgate.TAG_DATA_END)
            comparable, rows = fgate.comparable_rows(
                eval_set, champ_end, champ.tags.get(fgate.TAG_WINDOW_END)
            )
            if rows is not None:
                eval_set = rows
                champion_pred = fgate.score_forecaster(f"models:/{model_name}/{champion}", eval_set)
                fresher = cand.tags.get(fgate.TAG_DATA_END, "") > (champ_end or "")
        baselines = {f: eval_set.forecasts(f) for f in eval_set.baseline_families}
        if fgate.NAIVE_FAMILY not in baselines and eval_set.family == fgate.NAIVE_FAMILY:
            baselines[fgate.NAIVE_FAMILY] = eval_set.forecasts(fgate.NAIVE_FAMILY)
        decision = fgate.decide_forecast(
            rule,
            eval_set,
            champion_pred,
            candidate,
            champion,
            comparable,
            fresher,
            baselines=baselines,
            naive=fgate.NAIVE_FAMILY,
        )
        logger.info(
            "gate %s v%s (%s) vs @%s=%s on %s rows from origin %s: %s (%s)",
            model_name,
            candidate,
            eval_set.family,
            CHAMPION,
            champion,
            len(eval_set.frame),
            eval_set.origin.date(),
            "promote" if decision.promote else "refuse",
            "; ".join(decision.reasons),
        )
        return decision

    return evaluate


def history_store(platform: PlatformConfig) -> HistoryStore:
    return HistoryStore.from_url(platform.store_url)


def version_task(client: mlflow.MlflowClient | None, version: ModelVersion) -> str:
    """The task a version was trained for, as a reference ``load_task`` takes: the declaration
    file it was trained from (``shelfwise.task_source``) while that file exists, else the task
    name (``shelfwise.task``); from the version's tags, else its run's."""
    tags = dict(version.tags)
    if not tags.get(rlog.TAG_TASK) and client is not None and version.run_id:
        try:
            tags = client.get_run(version.run_id).data.tags
        except MlflowException:
            tags = {}
    task, source = tags.get(rlog.TAG_TASK), tags.get(rlog.TAG_TASK_SOURCE)
    where = f"{version.name} version {version.version}"
    declared = task_names()
    how = (
        f"set it to a declared task ({', '.join(declared) or 'none'}) with MlflowClient()."
        f"set_model_version_tag({version.name!r}, {str(version.version)!r}, {rlog.TAG_TASK!r}, "
        "<task>)"
    )
    if not task:
        run = f"nor on its run {version.run_id}" if version.run_id else "and it has no run"
        raise RegistryError(
            f"{where} has no {rlog.TAG_TASK!r} tag (not on the version {run}): cannot tell "
            f"which task's gate applies; {how}, or register it through a Shelfwise training flow"
        )
    if source and Path(source).is_file():
        return source
    if task not in declared:
        raise RegistryError(
            f"{where} has {rlog.TAG_TASK}={task!r}, which is not a declared task "
            f"(configs/tasks/<name>.yaml): {how}"
        )
    return task


def run_gate(
    platform: PlatformConfig,
    model_name: str,
    candidate: str = "challenger",
    trigger: str = "manual",
    actor: str | None = None,
    task: str | None = None,
    extra_data: str | None = None,
) -> dict:
    """Gate ``candidate`` (a version or an alias) against ``@champion``; promote if it wins.

    The task (so the evaluator of its kind, the gate rule and the model config) is ``task`` (a
    name or a declaration's path) or else the candidate version's own (``version_task``)."""
    mlflow.set_tracking_uri(ensure_tracking_uri(platform))
    client = mlflow.MlflowClient()
    mv = resolve_version(client, model_name, candidate)
    declaration = load_task(task or version_task(client, mv))
    rule = gate_rule(declaration)
    if declaration.kind is TaskKind.forecast:
        evaluator = _forecast_evaluator(client, model_name, declaration, rule)
    else:
        evaluator = _tabular_evaluator(platform, client, model_name, declaration, rule, extra_data)
    if rule.online is not None:  # live evidence too (flows/online.py)
        from shelfwise.flows.online import online_evaluator

        evaluator = online_evaluator(platform, declaration, rule, evaluator)
    logger.info(
        "gating %s v%s for task %s (%s)", model_name, mv.version, declaration.name, declaration.kind
    )
    out = _gate_with(platform, client, model_name, str(mv.version), evaluator, trigger, actor)
    if (out.get("gate") or {}).get("online") is not None:
        from shelfwise.flows.online import settle_online

        out["online"] = settle_online(platform, client, model_name, rule, out, trigger, actor)
    return out


def _tabular_evaluator(
    platform: PlatformConfig,
    client: mlflow.MlflowClient,
    model_name: str,
    task: TaskDeclaration,
    rule: GateRule,
    extra_data: str | None,
) -> Evaluate:
    cfg = training_config(task)
    if extra_data:
        # Retraining on feedback grows the evaluation set (original holdout + held-out feedback
        # rows), so the champion's recorded fingerprint is older by construction. Both versions
        # are re-scored on the new set, which the champion never trained on unless it was
        # itself retrained on the same feedback rows (noted in the decision's reasons).
        rule = rule.model_copy(update={"allow_fingerprint_mismatch": True})
    spec = task.dataset_spec()
    eval_set = rgate.load_tabular_eval_set(
        spec, cfg, platform.data_dir, extra_data, task.kind.value, task.data
    )
    return tabular_evaluator(client, model_name, eval_set, rule, task.naive_baseline)


def _forecast_evaluator(
    client: mlflow.MlflowClient, model_name: str, task: TaskDeclaration | str, rule: GateRule
) -> Evaluate:
    """The forecast kind's evaluator for ``task`` (a declaration, or its name or path)."""
    declaration = task if isinstance(task, TaskDeclaration) else load_task(task)
    spec = declaration.dataset_spec()
    return forecast_evaluator(client, model_name, list(spec.series_keys), rule)


def _gate_with(
    platform: PlatformConfig,
    client: mlflow.MlflowClient,
    model_name: str,
    version: str,
    evaluator,
    trigger: str,
    actor: str | None,
) -> dict:
    """One gate for every task: its evaluator decides, the promotion and its history record are
    the same code (registry/promotion.py)."""
    store = history_store(platform)
    try:
        outcome = gate_and_promote(
            client, store, model_name, version, evaluator, trigger=trigger, actor=actor
        )
    finally:
        store.dispose()
    return outcome.as_dict()


@flow(name="gate-and-promote")
def gate_and_promote_flow(
    model_name: str,
    candidate: str = "challenger",
    trigger: str = "manual",
    actor: str | None = None,
    task: str | None = None,
    platform_config: str = "platform",
    extra_data: str | None = None,
) -> dict:
    """Compare ``candidate`` with ``@champion`` using the evaluator of its task's kind (``task``,
    or the candidate's ``shelfwise.task`` tags); promote it (moving ``@previous`` and
    ``@champion``) if the task's gate rule says so; record the decision."""
    capture_platform_logs()
    platform = load_platform_config(platform_config)
    return run_gate(platform, model_name, candidate, trigger, actor, task, extra_data)
