"""Prefect flow ``gate-and-promote``: wires the gate (registry/gate.py), the aliases
(registry/aliases.py) and the history (registry/history.py) via registry/promotion.py."""

from __future__ import annotations

import logging

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import flow

from shelfwise.configs.datasets import load_tabular_spec
from shelfwise.configs.delay import load_delay_config
from shelfwise.configs.gate import GateRule, load_gate_config
from shelfwise.configs.platform import PlatformConfig, load_platform_config
from shelfwise.configs.tasks import TaskDeclaration, load_task
from shelfwise.flows.environment import capture_platform_logs
from shelfwise.registry import forecast_gate as fgate
from shelfwise.registry import gate as rgate
from shelfwise.registry import log as rlog
from shelfwise.registry.aliases import CHAMPION, RegistryError, resolve_version
from shelfwise.registry.history import HistoryStore
from shelfwise.registry.promotion import Evaluate, gate_and_promote
from shelfwise.registry.tracking import ensure_tracking_uri

logger = logging.getLogger(__name__)

SUPPORTED_TASKS = (rlog.TASK_DELAY_RISK, rlog.TASK_DEMAND_FORECAST)


def delay_risk_evaluator(
    client: mlflow.MlflowClient,
    model_name: str,
    eval_set: rgate.EvalSet,
    rule,
) -> Evaluate:
    """``evaluate(candidate, champion)``: score both versions on ``eval_set`` and decide."""

    def evaluate(candidate: str, champion: str | None) -> rgate.GateDecision:
        cand = client.get_model_version(model_name, candidate)
        challenger_pred = rgate.score_classifier(f"models:/{model_name}/{candidate}", eval_set.X)
        champion_pred = champion_fp = None
        if champion is not None:
            champ = client.get_model_version(model_name, champion)
            champion_fp = champ.tags.get(rlog.TAG_EVAL_FINGERPRINT)
            # pinned to the version read under the alias, not the alias itself, so the
            # decision names exactly what was scored
            champion_pred = rgate.score_classifier(f"models:/{model_name}/{champion}", eval_set.X)
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


def version_task(client: mlflow.MlflowClient, version: ModelVersion) -> str:
    """The task a version was trained for: its ``shelfwise.task`` tag, else its run's."""
    task = version.tags.get(rlog.TAG_TASK)
    if not task and version.run_id:
        try:
            task = client.get_run(version.run_id).data.tags.get(rlog.TAG_TASK)
        except MlflowException:
            task = None
    where = f"{version.name} version {version.version}"
    how = (
        f"set it to one of {SUPPORTED_TASKS} with MlflowClient().set_model_version_tag("
        f"{version.name!r}, {str(version.version)!r}, {rlog.TAG_TASK!r}, <task>)"
    )
    if not task:
        run = f"nor on its run {version.run_id}" if version.run_id else "and it has no run"
        raise RegistryError(
            f"{where} has no {rlog.TAG_TASK!r} tag (not on the version {run}): cannot tell "
            f"which task's gate applies; {how}, or register it through a Shelfwise training flow"
        )
    if task not in SUPPORTED_TASKS:
        raise RegistryError(
            f"{where} has {rlog.TAG_TASK}={task!r}, not a task with an evaluation-set scorer "
            f"(supported: {SUPPORTED_TASKS}; versions registered before the tag held the task "
            f"hold the model name there): {how}"
        )
    return task


def run_gate(
    platform: PlatformConfig,
    model_name: str,
    candidate: str = "challenger",
    trigger: str = "manual",
    actor: str | None = None,
    config: str | None = None,
    gate_config: str = "gate",
    extra_data: str | None = None,
) -> dict:
    """Gate ``candidate`` (a version or an alias) against ``@champion``; promote if it wins.

    The task, and so the evaluator and the gate rule, is the candidate version's own
    (``version_task``); ``config`` is that task's model config (default: the shipped one)."""
    mlflow.set_tracking_uri(ensure_tracking_uri(platform))
    client = mlflow.MlflowClient()
    mv = resolve_version(client, model_name, candidate)
    task = version_task(client, mv)
    rule = load_gate_config(gate_config).rule_for(task)
    if task == rlog.TASK_DEMAND_FORECAST:
        evaluator = _forecast_evaluator(client, model_name, config or task, rule)
    else:
        evaluator = _delay_evaluator(platform, client, model_name, config or task, rule, extra_data)
    logger.info("gating %s v%s as a %s model", model_name, mv.version, task)
    return _gate_with(platform, client, model_name, str(mv.version), evaluator, trigger, actor)


def _delay_evaluator(
    platform: PlatformConfig,
    client: mlflow.MlflowClient,
    model_name: str,
    config: str,
    rule: GateRule,
    extra_data: str | None,
) -> Evaluate:
    cfg = load_delay_config(config)
    if extra_data:
        # Retraining on feedback grows the evaluation set (original holdout + held-out feedback
        # rows), so the champion's recorded fingerprint is older by construction. Both versions
        # are re-scored on the new set, which the champion never trained on unless it was
        # itself retrained on the same feedback rows (noted in the decision's reasons).
        rule = rule.model_copy(update={"allow_fingerprint_mismatch": True})
    spec = load_tabular_spec(cfg.dataset)
    eval_set = rgate.load_delay_eval_set(spec, cfg, platform.data_dir, extra_data)
    return delay_risk_evaluator(client, model_name, eval_set, rule)


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
    config: str | None = None,
    gate_config: str = "gate",
    platform_config: str = "platform",
    extra_data: str | None = None,
) -> dict:
    """Compare ``candidate`` with ``@champion`` using the evaluator of the candidate's task (its
    ``shelfwise.task`` tag); promote it (moving ``@previous`` and ``@champion``) if the
    configured rule says so; record the decision."""
    capture_platform_logs()
    platform = load_platform_config(platform_config)
    return run_gate(
        platform, model_name, candidate, trigger, actor, config, gate_config, extra_data
    )
