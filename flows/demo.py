"""`shelfwise demo`: the platform's loop on the real data against the local stack, as a list of
steps. Each step is a function of the shared ``DemoContext``; the list is ``demo_steps``.

The loop (configs/demo.yaml): train the scenario's declared task (delay risk) on one segment
(low-discount orders) and the forecast task, each through its Prefect deployment and the gate
-> tune briefly -> serve the champion -> replay held-out in-segment orders with their outcomes
(the monitoring deployment must stay quiet) -> replay traffic dominated by the unseen segment
-> the monitoring deployment sees the drift and emits ``shelfwise.retrain.requested`` ->
Prefect's trigger starts the retraining deployment -> gate -> promotion -> the service swaps.
The loop's latency is timed per stage.

Ends with a summary: steps and their times, the loop's decisions and stages, the registry's
versions (metrics, aliases, decisions) and the URLs of the MLflow UI, the Prefect UI, the
service's docs and the Evidently UI. Without ``keep`` it stops the stack afterwards (as
`shelfwise stack down` would), even the parts that were already running; ``keep`` leaves
everything up to explore.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from shelfwise.configs.demo import DemoConfig, DemoTaskConfig
from shelfwise.configs.loader import ConfigError
from shelfwise.configs.platform import PlatformConfig
from shelfwise.configs.stack import StackConfig
from shelfwise.configs.tasks import gate_rule, training_config

logger = logging.getLogger(__name__)


class DemoError(RuntimeError):
    """A demo step failed; the message names the step."""


@dataclass
class StepRecord:
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    detail: str = ""


@dataclass
class VersionRow:
    model: str
    version: str
    aliases: list[str]
    metrics: dict[str, float]
    trigger: str
    decision: str


@dataclass
class MonitorCheck:
    """One run of the monitoring deployment, as recorded in the platform's SQL store."""

    traffic: str  # quiet | shifted
    model_version: str
    window_rows: int
    labelled_rows: int
    drift_share: float | None
    retrain: bool
    trigger: str | None
    reasons: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class LoopLatency:
    """From the monitoring run that crosses the threshold to the new champion answering."""

    detect_s: float = 0.0  # the monitoring flow run (drift + performance + decision + event)
    trigger_s: float = 0.0  # monitoring run finished -> retraining flow run created by Prefect
    start_s: float = 0.0  # flow run created -> running (worker poll + process start)
    retrain_s: float = 0.0  # retraining flow run start -> promoted (its gate subflow's end)
    gate_s: float = 0.0  # of which the gate-and-promote subflow
    swap_s: float = 0.0  # promoted -> the service serves the new version (its serving_since)
    total_s: float = 0.0
    old_version: str = ""
    new_version: str = ""
    promoted: bool = False
    retrain_flow_run: str = ""


@dataclass
class DemoSummary:
    reduced: bool
    steps: list[StepRecord] = field(default_factory=list)
    versions: list[VersionRow] = field(default_factory=list)
    monitoring: list[MonitorCheck] = field(default_factory=list)
    loop: LoopLatency | None = None
    urls: dict[str, str] = field(default_factory=dict)
    stack: list[dict] = field(default_factory=list)
    flow_runs: list[dict] = field(default_factory=list)
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class DemoContext:
    platform: PlatformConfig
    stack: StackConfig
    demo: DemoConfig
    reduced: bool
    console: Console
    summary: DemoSummary
    plan: Any = None  # flows.stack.StackPlan once the stack step ran
    values: dict[str, Any] = field(default_factory=dict)  # what steps hand to later steps


@dataclass(frozen=True)
class DemoStep:
    name: str
    run: Callable[[DemoContext], str | None]  # returns a one-line detail for the summary


# --------------------------------------------------------------------------- configs


def write_task(ctx: DemoContext, role: str, cfg: DemoTaskConfig, *layers: dict) -> str:
    """The declared task ``cfg.task`` with the demo's overrides (and ``reduced`` under
    --reduced) merged over it, written self-contained to ``<state>/demo/<task>.yaml``; returns
    the path, which the deployments are given as their ``task`` parameter."""
    from shelfwise.configs.tasks import load_task, materialise

    declaration = load_task(cfg.task)
    over = [*layers, cfg.overrides, cfg.reduced if ctx.reduced else {}]
    try:
        merged = materialise(declaration, *over)
    except ConfigError as exc:
        raise ConfigError(f"configs/demo.yaml {role} overrides of {cfg.task}: {exc}") from None
    out = ctx.platform.state_path / "demo" / f"{declaration.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    ctx.values.setdefault("tasks", {})[role] = load_task(out)
    return str(out)


def write_demo_tasks(ctx: DemoContext) -> dict[str, str]:
    """The scenario's task (first trained on its segment only) and the forecast task."""
    scenario = ctx.demo.scenario
    paths = {
        "scenario": write_task(
            ctx, "scenario", scenario, {"training": {"row_filter": scenario.segment}}
        )
    }
    if ctx.demo.forecast is not None and ctx.demo.forecast.enabled:
        paths["forecast"] = write_task(ctx, "forecast", ctx.demo.forecast)
    return paths


def task_of(ctx: DemoContext, role: str):
    """The demo's declaration for ``role`` (``scenario`` or ``forecast``)."""
    return ctx.values["tasks"][role]


def model_of(ctx: DemoContext, role: str) -> str:
    return task_of(ctx, role).registered_model


def deployment_of(ctx: DemoContext, step: str, role: str) -> str:
    from shelfwise.configs.deployments import deployment_name

    return deployment_name(step, task_of(ctx, role))


def ensure_api_key(platform: PlatformConfig) -> str:
    """The key the feedback endpoint needs: the configured one, else one made for this state
    folder (kept in ``<state>/demo/api_key``) and exported for the service the stack starts."""
    from shelfwise.configs.serving import load_serving_config

    settings = load_serving_config()
    key = settings.api_key(platform.serving.api_key)
    if key:
        return key
    path = platform.state_path / "demo" / "api_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_text(secrets.token_urlsafe(24), encoding="utf-8")
        path.chmod(0o600)
    key = path.read_text(encoding="utf-8").strip()
    os.environ[settings.auth.api_key_env] = key
    return key


# --------------------------------------------------------------------------- helpers


def start_flow(ctx: DemoContext, deployment: str, parameters: dict[str, Any]):
    """Create a run of a deployment for the stack's worker without waiting for it."""
    from shelfwise.flows.deployments import start_deployment_run

    return start_deployment_run(ctx.platform, deployment, parameters)


def finish_flow(ctx: DemoContext, run) -> str:
    """Wait for a started run; a failed run fails the step with its error."""
    from shelfwise.flows.deployments import wait_for_run

    outcome = wait_for_run(ctx.platform, run, ctx.demo.flow_run_timeout_s)
    deployment = run.deployment
    ctx.summary.flow_runs.append({"deployment": deployment, **asdict(outcome)})
    if not outcome.ok:
        raise DemoError(
            f"flow run {outcome.name} of {deployment} ended {outcome.state}: {outcome.message} "
            f"(Prefect UI: {ctx.plan.prefect_ui_url}/runs/flow-run/{outcome.id})"
        )
    return f"flow run {outcome.name} completed in {outcome.seconds:.0f} s"


def run_flow(ctx: DemoContext, deployment: str, parameters: dict[str, Any]) -> str:
    """Run a deployment through the stack's worker and wait for it (see ``finish_flow``)."""
    return finish_flow(ctx, start_flow(ctx, deployment, parameters))


def registry_rows(tracking_uri: str, model: str) -> list[VersionRow]:
    """Every version of ``model`` with its metrics, aliases, trigger and gate decision (if any)."""
    from mlflow import MlflowClient

    from shelfwise.registry.aliases import RegistryError
    from shelfwise.registry.promotion import version_rows

    try:
        rows = version_rows(MlflowClient(tracking_uri=tracking_uri), model)
    except RegistryError:  # not registered (yet)
        return []
    return [
        VersionRow(
            model=model,
            version=r["version"],
            aliases=r["aliases"],
            metrics=r["metrics"],
            trigger=r["trigger"] or "",
            decision=r["decision"] or "",
        )
        for r in rows
    ]


def champion_version(tracking_uri: str, model: str) -> str | None:
    from mlflow import MlflowClient

    from shelfwise.registry.aliases import CHAMPION, alias_version

    # None also when nothing is registered yet (MLflow answers RESOURCE_DOES_NOT_EXIST)
    return alias_version(MlflowClient(tracking_uri=tracking_uri), model, CHAMPION)


def champion_trigger(tracking_uri: str, model: str) -> str:
    from mlflow import MlflowClient

    from shelfwise.registry.aliases import CHAMPION, resolve_version

    mv = resolve_version(MlflowClient(tracking_uri=tracking_uri), model, CHAMPION)
    return mv.tags.get("shelfwise.trigger", "")


def latest_monitor_check(ctx: DemoContext, traffic: str) -> MonitorCheck:
    """The last monitoring record of the scenario's model."""
    from shelfwise.monitoring import records
    from shelfwise.monitoring.store import PredictionStore

    store = PredictionStore(ctx.platform.store_url)
    try:
        frame = records.history(records.ensure_tables(store.engine), model_of(ctx, "scenario"))
    finally:
        store.dispose()
    if frame.empty:
        raise DemoError("the monitoring run recorded nothing in the platform's store")
    row = frame.iloc[-1]
    metrics = {
        k.removeprefix("metric."): float(v)
        for k, v in row.items()
        if k.startswith("metric.") and v == v  # NaN: not measured in this run
    }
    return MonitorCheck(
        traffic=traffic,
        model_version=str(row["model_version"]),
        window_rows=int(row["window_rows"]),
        labelled_rows=int(row["labelled_rows"]),
        drift_share=None if row["drift_share"] != row["drift_share"] else float(row["drift_share"]),
        retrain=bool(row["retrain"]),
        trigger=row["trigger"],
        reasons=str(row["reasons"]),
        metrics=metrics,
    )


def _prefect_post(ctx: DemoContext, path: str, body: dict) -> Any:
    import httpx

    r = httpx.post(f"{ctx.plan.prefect_api_url}{path}", json=body, timeout=15)
    r.raise_for_status()
    return r.json()


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def wait_triggered_run(ctx: DemoContext, deployment: str, after: datetime, timeout_s: float):
    """The flow run of ``deployment`` that Prefect created after ``after`` (by a trigger), once it
    is finished. Returns its JSON; DemoError if none appears or it does not complete."""
    from shelfwise.flows.deployments import deployment_id

    dep = deployment_id(ctx.platform, deployment)
    deadline = time.monotonic() + timeout_s
    run: dict | None = None
    while time.monotonic() < deadline:
        runs = _prefect_post(
            ctx,
            "/flow_runs/filter",
            {
                "deployments": {"id": {"any_": [dep]}},
                "flow_runs": {"expected_start_time": {"after_": after.isoformat()}},
                "sort": "EXPECTED_START_TIME_ASC",
                "limit": 5,
            },
        )
        run = runs[0] if runs else None
        if run and run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            break
        time.sleep(1.0)
    if run is None:
        raise DemoError(
            f"no flow run of {deployment} was created within {timeout_s:.0f} s of the event "
            f"(Prefect UI: {ctx.plan.prefect_ui_url}/deployments)"
        )
    url = f"{ctx.plan.prefect_ui_url}/runs/flow-run/{run['id']}"
    if run["state_type"] != "COMPLETED":
        raise DemoError(f"flow run {run['name']} of {deployment} is {run['state_type']} ({url})")
    ctx.summary.flow_runs.append(
        {
            "deployment": deployment,
            "id": run["id"],
            "name": run["name"],
            "state": run["state_type"],
            "message": (run.get("state") or {}).get("message") or "",
            "seconds": round(run.get("total_run_time") or 0.0, 1),
        }
    )
    return run


def subflow_runs(ctx: DemoContext, flow_name: str, after: datetime) -> list[dict]:
    """Runs of ``flow_name`` (e.g. the gate-and-promote subflow) started after ``after``."""
    return _prefect_post(
        ctx,
        "/flow_runs/filter",
        {
            "flows": {"name": {"any_": [flow_name]}},
            "flow_runs": {"start_time": {"after_": after.isoformat()}},
            "sort": "START_TIME_ASC",
            "limit": 5,
        },
    )


def service_client(ctx: DemoContext):
    from shelfwise.flows.stack import Component
    from shelfwise.serving.client import ServiceClient

    serving = ctx.plan.process(Component.serving)
    if serving is None:
        raise DemoError(f"the service is not part of the stack: {ctx.plan.disabled}")
    return ServiceClient(serving.server.url, api_key=ctx.values["api_key"])


def _progress(ctx: DemoContext, label: str, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=ctx.console,
        transient=True,
    )
    task = progress.add_task(label, total=total)
    return progress, lambda n: progress.advance(task, n)


# --------------------------------------------------------------------------- steps


def step_start_stack(ctx: DemoContext) -> str:
    """Everything but the service, which starts once a champion exists (its readiness waits
    for one)."""
    from shelfwise.flows.stack import Component, plan_stack, stack_up

    ctx.values["api_key"] = ensure_api_key(ctx.platform)
    ev = ctx.stack.evidently
    state = ctx.platform.state_path
    workspace = ev.workspace if ev.workspace.is_absolute() else state / ev.workspace
    workspace.mkdir(parents=True, exist_ok=True)  # so that `evidently ui` starts with the stack
    ctx.plan = plan_stack(ctx.platform, ctx.stack)
    wanted = {p.component for p in ctx.plan.processes} - {Component.serving}
    states = stack_up(ctx.plan, only=wanted)
    ctx.summary.stack = [s.as_dict() for s in states]
    return ", ".join(f"{s.name}: {s.state}" for s in states if s.state != "disabled")


def step_write_configs(ctx: DemoContext) -> str:
    ctx.values["paths"] = write_demo_tasks(ctx)
    return f"{ctx.platform.state_path / 'demo'}: " + ", ".join(
        f"{role} {task_of(ctx, role).name}" for role in ctx.values["paths"]
    )


def step_deploy(ctx: DemoContext) -> str:
    from shelfwise.configs.deployments import load_deployments_config
    from shelfwise.flows.deployments import deploy

    if not ctx.demo.deploy:
        return "skipped (deploy: false)"
    result = deploy(load_deployments_config(), ctx.platform, ctx.plan.root, skip_unchanged=True)
    skipped = f"; not in this checkout: {', '.join(result.skipped)}" if result.skipped else ""
    verb = "already deployed:" if result.unchanged else "deployed"
    return f"{verb} {', '.join(result.deployed)}{skipped}"


def step_train_scenario(ctx: DemoContext) -> str:
    model = model_of(ctx, "scenario")
    before = champion_version(ctx.plan.tracking_uri, model)
    detail = run_flow(
        ctx,
        deployment_of(ctx, "train", "scenario"),
        {"task": ctx.values["paths"]["scenario"], "trigger": "manual"},
    )
    champion = champion_version(ctx.plan.tracking_uri, model)
    if champion is None:
        raise DemoError(f"no {model}@champion after training: see the gate's decision in MLflow")
    # an earlier demo's retrained champion (trigger drift/feedback) already knows the shifted
    # segment and may keep its place: the quiet check below reads differently then
    trigger = champion_trigger(ctx.plan.tracking_uri, model)
    ctx.values["segment_champion"] = trigger not in {"drift", "feedback"}
    kept = "" if champion != before else " (kept by the gate)"
    return f"{detail}; {model}@champion = v{champion} (trigger {trigger}){kept}"


def step_start_forecast(ctx: DemoContext) -> str:
    """Start the forecast task's training, which runs beside the scenario's training and tuning
    on the worker's second slot (each flow run is mostly a fresh interpreter importing the
    stack)."""
    if "forecast" not in ctx.values["paths"]:
        return "skipped (forecast.enabled: false)"
    params = {"task": ctx.values["paths"]["forecast"], "trigger": "manual"}
    run = start_flow(ctx, deployment_of(ctx, "train", "forecast"), params)
    ctx.values["forecast_run"] = run
    n = training_config(task_of(ctx, "forecast")).data.max_series
    return f"{n or 'all'} series; flow run {run.name} started"


def step_train_forecast(ctx: DemoContext) -> str:
    if "forecast_run" not in ctx.values:
        return "skipped (forecast.enabled: false)"
    detail = finish_flow(ctx, ctx.values.pop("forecast_run"))
    model = model_of(ctx, "forecast")
    champion = champion_version(ctx.plan.tracking_uri, model)
    if champion is None:
        raise DemoError(f"no {model}@champion after training: see the gate in MLflow")
    return f"{detail}; {model}@champion = v{champion}"


def step_tune(ctx: DemoContext) -> str:
    t = ctx.demo.tune
    if not t.enabled:
        return "skipped (tune.enabled: false)"
    params: dict[str, Any] = {
        "n_trials": t.reduced_n_trials if ctx.reduced else t.n_trials,
        "task": ctx.values["paths"]["scenario"],
        "trigger": "manual",
        "study_name": f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}",
    }
    folds = t.reduced_cv_folds if ctx.reduced else t.cv_folds
    if folds:
        params["cv_folds"] = folds
    detail = run_flow(ctx, deployment_of(ctx, "tune", "scenario"), params)
    return f"{params['n_trials']} trials; {detail}"


def _start_service(plan) -> Any:
    from shelfwise.flows.stack import Component, stack_up

    return next(
        s for s in stack_up(plan, only={Component.serving}) if s.component == Component.serving
    )


def step_start_service(ctx: DemoContext) -> str:
    """Start `bentoml serve` in the background now that the scenario's task has a champion: its
    start-up (~20 s of imports and model loading) overlaps the tuning run; `serve the champion`
    joins it."""
    import threading

    outcome: dict[str, Any] = {}

    def start() -> None:
        try:
            outcome["state"] = _start_service(ctx.plan)
        except BaseException as exc:  # handed to step_serve, which raises it
            outcome["error"] = exc

    thread = threading.Thread(target=start, name="demo-start-service", daemon=True)
    thread.start()
    ctx.values["service_start"] = (thread, outcome)
    return "bentoml serve starting in the background"


def step_serve(ctx: DemoContext) -> str:
    from shelfwise.flows.stack import Component

    if "service_start" in ctx.values:
        thread, outcome = ctx.values.pop("service_start")
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        state = outcome["state"]
    else:
        state = _start_service(ctx.plan)
    ctx.summary.stack = [s for s in ctx.summary.stack if s["component"] != Component.serving]
    ctx.summary.stack.append(state.as_dict())
    if state.state not in {"started", "reused"}:
        raise DemoError(f"the service did not start: {state.detail} (log: {state.log_file})")
    task = task_of(ctx, "scenario")
    champion = champion_version(ctx.plan.tracking_uri, task.registered_model)
    client = service_client(ctx)
    try:
        waited = client.wait_for_version(task.name, champion, ctx.demo.loop.serve_timeout_s)
    finally:
        client.close()
    ctx.values["served"] = champion
    return f"{state.state}; serving {task.name} v{champion} ({waited:.1f} s after start-up)"


def step_forecast(ctx: DemoContext) -> str:
    """A forecast with inventory advice through the service, as a store manager's tool asks."""
    from shelfwise.serving.task_api import forecast_api

    if "forecast" not in ctx.values["paths"]:
        return "skipped (forecast.enabled: false)"
    task = task_of(ctx, "forecast")
    champion = champion_version(ctx.plan.tracking_uri, task.registered_model)
    client = service_client(ctx)
    try:
        client.wait_for_version(task.name, champion, ctx.demo.loop.serve_timeout_s)
        request = {**forecast_api(task).example, "horizon": 28}
        answer = client.forecast(task, request)
    finally:
        client.close()
    inv = answer["inventory"]
    ctx.values["forecast"] = answer
    keys = ", ".join(f"{k}={v}" for k, v in answer["series"].items())
    return (
        f"v{answer['model_version']} {keys}: {answer['horizon']} days, first day "
        f"{answer['forecast'][0]['yhat']:.1f}; lead time {inv['lead_time']} at "
        f"{inv['service_level']:.0%}: safety stock {inv['safety_stock']:.0f}, reorder point "
        f"{inv['reorder_point']:.0f}, P(stockout with {inv['on_hand']:.0f} on hand) "
        f"{inv['stockout_probability']:.2f}"
    )


def _traffic(ctx: DemoContext):
    from shelfwise.flows.replay import shift_traffic
    from shelfwise.models.datasets import load_tabular

    if "traffic" not in ctx.values:
        task = task_of(ctx, "scenario")
        cfg = training_config(task)
        spec = task.dataset_spec()
        data, _ = load_tabular(spec, ctx.platform.data_dir)
        loop = ctx.demo.loop
        seed = int(time.time()) % 10_000  # a second demo run replays other orders
        traffic = shift_traffic(
            data, spec, cfg, loop.quiet_rows, loop.shifted_rows, loop.shifted_share, seed
        )
        ctx.values["traffic"], ctx.values["spec"], ctx.values["seed"] = traffic, spec, seed
    return ctx.values["traffic"], ctx.values["spec"]


def _replay(ctx: DemoContext, label: str) -> str:
    from shelfwise.flows.replay import replay

    traffic, spec = _traffic(ctx)
    rows = getattr(traffic, label)
    client = service_client(ctx)
    progress, advance = _progress(ctx, f"{label} traffic", len(rows))
    try:
        with progress:
            result = replay(
                client,
                task_of(ctx, "scenario"),
                rows,
                ctx.demo.loop.batch_size,
                f"demo{ctx.values['seed']}-{label}",
                advance,
            )
    finally:
        client.close()
    versions = ", ".join(f"v{v}: {n}" for v, n in result.versions.items())
    late = rows[spec.target].mean()
    return (
        f"{result.orders} orders + {result.feedback} outcomes in {result.seconds:.0f} s "
        f"(answered by {versions}; mean predicted probability {result.mean_probability:.2f}, "
        f"actual positive rate {late:.2f})"
    )


def _monitor(ctx: DemoContext, traffic: str, emit: bool = True) -> tuple[MonitorCheck, str]:
    params = {"task": ctx.values["paths"]["scenario"], "emit": emit}
    detail = run_flow(ctx, deployment_of(ctx, "monitor", "scenario"), params)
    check = latest_monitor_check(ctx, traffic)
    ctx.summary.monitoring.append(check)
    drift = "n/a" if check.drift_share is None else f"{check.drift_share:.2f}"
    auc = check.metrics.get("roc_auc")
    verdict = (
        f"RETRAIN ({check.trigger})"
        if check.retrain
        else (f"rule broken ({check.trigger}), not emitted" if check.trigger else "keep")
    )
    return check, (
        f"{detail}; v{check.model_version}: {check.window_rows} rows, drift share {drift}, "
        f"feedback ROC-AUC {'n/a' if auc is None else f'{auc:.3f}'} -> {verdict}"
    )


def step_quiet_traffic(ctx: DemoContext) -> str:
    return _replay(ctx, "quiet")


def step_monitor_quiet(ctx: DemoContext) -> str:
    """The decision on in-segment traffic, not emitted (the shift comes next). For a champion
    trained on that segment, a retrain decision is a false alarm and fails the demo; a champion
    from an earlier demo was trained with the shifted rows too, so segment-only traffic is a real
    change for it, and the demo says so."""
    check, detail = _monitor(ctx, "quiet", emit=False)
    alarm = check.trigger is not None  # a rule broke (retrain decided, not emitted here)
    if alarm and ctx.values.get("segment_champion", True):
        raise DemoError(f"false alarm on in-segment traffic: {check.reasons}")
    if alarm:
        return (
            f"{detail} (not emitted: v{check.model_version} comes from an earlier demo and was "
            f"trained with the high-discount rows, so low-discount traffic alone differs from "
            f"its reference)"
        )
    return detail


def step_shifted_traffic(ctx: DemoContext) -> str:
    return _replay(ctx, "shifted")


def step_close_the_loop(ctx: DemoContext) -> str:
    """Monitoring deployment -> event -> Prefect's trigger -> retraining deployment -> gate ->
    promotion -> the service swaps. Stages are timed on the wall clock from the flow runs' own
    timestamps and the service's ``serving_since`` (one machine, one clock)."""
    from shelfwise.serving.client import row_payload

    loop = ctx.demo.loop
    uri = ctx.plan.tracking_uri
    task = task_of(ctx, "scenario")
    old = champion_version(uri, task.registered_model) or ""
    started = datetime.now(UTC)
    check, detail = _monitor(ctx, "shifted")
    detected = datetime.now(UTC)
    latency = LoopLatency(detect_s=_secs(started, detected), old_version=old)
    ctx.summary.loop = latency
    if not check.retrain:
        raise DemoError(f"the shift was not detected: {check.reasons or detail}")
    ctx.console.print(f"  detected: {detail}")
    retrain = deployment_of(ctx, "retrain", "scenario")
    run = wait_triggered_run(ctx, retrain, started, loop.retrain_timeout_s)
    created, start, end = (_parse(run.get(k)) for k in ("created", "start_time", "end_time"))
    latency.retrain_flow_run = run["name"]
    gates = subflow_runs(ctx, "gate-and-promote", start or started)
    gate_end = _parse(gates[-1].get("end_time")) if gates else None
    promoted_at = gate_end or end  # the alias moves at the end of the gate subflow
    # Each stage ends where the next begins; a boundary seen out of order (the event started
    # the retraining before the monitoring run handed back to the demo; the service loaded the
    # version before the gate subflow ended) is moved back to the earlier one, so the stages
    # stay disjoint parts of the total.
    created = _no_later(created, start)
    detected = _no_later(detected, created)
    latency.detect_s = _secs(started, detected)
    latency.trigger_s = _secs(detected, created)
    latency.start_s = _secs(created, start)
    latency.retrain_s = _secs(start, promoted_at)
    latency.gate_s = round(sum(g.get("total_run_time") or 0.0 for g in gates), 1)
    new = champion_version(uri, task.registered_model) or ""
    latency.new_version, latency.promoted = new, new != old
    if not latency.promoted:
        latency.total_s = _secs(started, end)
        return f"retrained by {run['name']}; the gate kept v{old} (see the registry table)"
    client = service_client(ctx)
    try:
        client.wait_for_version(task.name, new, loop.swap_timeout_s)
        since = _parse(client.served(task.name)["serving_since"])
        traffic, _ = _traffic(ctx)
        row = traffic.shifted.iloc[0].to_dict()
        answer = client.predict_batch(task, [row_payload(task, row, "demo-after-swap")])[0]
    finally:
        client.close()
    if since is not None and promoted_at is not None and _aware(since) < _aware(promoted_at):
        promoted_at = since
        latency.retrain_s = _secs(start, promoted_at)
    latency.swap_s = _secs(promoted_at, since)
    latency.total_s = _secs(started, since)
    if answer["model_version"] != new:
        raise DemoError(f"the service answered with v{answer['model_version']}, not v{new}")
    return (
        f"v{old} -> v{new} in {latency.total_s:.0f} s (detect {latency.detect_s:.0f}, "
        f"trigger {latency.trigger_s:.0f}, worker start {latency.start_s:.0f}, retrain "
        f"{latency.retrain_s:.0f} incl. gate {latency.gate_s:.0f}, swap {latency.swap_s:.0f})"
    )


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _no_later(t: datetime | None, bound: datetime | None) -> datetime | None:
    """``t``, or ``bound`` when that comes first."""
    if t is None or bound is None:
        return t
    return bound if _aware(bound) < _aware(t) else t


def _secs(a: datetime | None, b: datetime | None) -> float:
    if a is None or b is None:
        return 0.0
    if b.tzinfo is None:
        b = b.replace(tzinfo=UTC)
    return round(max((b - a).total_seconds(), 0.0), 1)


def step_summarise_registry(ctx: DemoContext) -> str:
    parts = []
    for role in ctx.values["paths"]:
        model, shown = model_of(ctx, role), gate_rule(task_of(ctx, role)).metrics()
        rows = registry_rows(ctx.plan.tracking_uri, model)
        for r in rows:  # the task's gate metrics, in the rule's order
            r.metrics = {k: r.metrics[k] for k in shown if k in r.metrics}
        ctx.summary.versions.extend(rows)
        parts.append(f"{model}: {len(rows)} version(s)")
    return "; ".join(parts)


def demo_steps(demo: DemoConfig | None = None) -> list[DemoStep]:
    """The demo, in order."""
    steps = [
        DemoStep("start the stack", step_start_stack),
        DemoStep("write the demo's configs", step_write_configs),
        DemoStep("deploy the flows", step_deploy),
        DemoStep("start training the forecast", step_start_forecast),
        DemoStep("train the scenario's task on its segment", step_train_scenario),
    ]
    loop = demo is None or demo.loop.enabled
    if loop:
        steps.append(DemoStep("start the service", step_start_service))
    steps += [
        DemoStep("tune the scenario's task", step_tune),
        DemoStep("train the forecast", step_train_forecast),
    ]
    if loop:
        steps += [
            DemoStep("serve the champion", step_serve),
            DemoStep("forecast + inventory through the service", step_forecast),
            DemoStep("replay in-segment traffic + feedback", step_quiet_traffic),
            DemoStep("monitor: no alarm expected", step_monitor_quiet),
            DemoStep("replay shifted traffic + feedback", step_shifted_traffic),
            DemoStep("monitor -> event -> retrain -> gate -> swap", step_close_the_loop),
        ]
    steps.append(DemoStep("read the registry", step_summarise_registry))
    return steps


# --------------------------------------------------------------------------- run + summary


def earlier_demo(platform: PlatformConfig) -> bool:
    """The state folder holds an earlier demo's run (its registry, incidents and feedback): the
    demo's own configs folder is there."""
    return (platform.state_path / "demo").is_dir()


def set_aside_state(platform: PlatformConfig, stack: StackConfig, now: datetime) -> Path:
    """Stop the stack running on the state folder and rename the folder beside itself
    (``<state>.<timestamp>``): nothing is deleted, and the demo starts from a fresh registry.
    The loop's story needs one: on an earlier demo's registry the champion, its handled
    incidents and its accumulated feedback are not the ones the story assumes."""
    from shelfwise.flows.stack import plan_stack, stack_down

    state = platform.state_path
    stack_down(plan_stack(platform, stack, serving=True, evidently=True))
    target = state.with_name(f"{state.name}.{now.strftime('%Y%m%d-%H%M%S')}")
    state.rename(target)
    return target


def run_demo(
    platform: PlatformConfig,
    stack: StackConfig,
    demo: DemoConfig,
    reduced: bool = False,
    keep: bool = False,
    console: Console | None = None,
    steps: list[DemoStep] | None = None,
) -> DemoSummary:
    from shelfwise.flows.stack import stack_down, stack_urls

    console = console or Console()
    if demo.loop.enabled and earlier_demo(platform):
        kept = set_aside_state(platform, stack, datetime.now(UTC))
        console.print(f"an earlier demo's state was moved to {kept}; the loop starts afresh")
    ctx = DemoContext(platform, stack, demo, reduced, console, DemoSummary(reduced=reduced))
    t0 = time.monotonic()
    try:
        for step in steps or demo_steps(demo):
            console.rule(f"[bold]{step.name}")
            s0 = time.monotonic()
            try:
                detail = step.run(ctx) or ""
            except Exception as exc:
                ctx.summary.steps.append(
                    StepRecord(step.name, "failed", round(time.monotonic() - s0, 1), str(exc))
                )
                raise DemoError(f"step '{step.name}' failed: {exc}") from exc
            ctx.summary.steps.append(
                StepRecord(step.name, "ok", round(time.monotonic() - s0, 1), detail)
            )
            console.print(f"[green]ok[/green] {detail}")
    finally:
        if ctx.plan is not None:
            ctx.summary.urls = stack_urls(ctx.plan)
        ctx.summary.wall_s = round(time.monotonic() - t0, 1)
        print_summary(ctx.summary, console, keep)
        if not keep and ctx.plan is not None:
            stack_down(ctx.plan)
    return ctx.summary


def _fmt(metrics: dict[str, float], key: str) -> str:
    return f"{key} {metrics[key]:.4g}" if key in metrics else ""


def print_summary(summary: DemoSummary, console: Console, keep: bool) -> None:
    steps = Table(title="demo steps")
    for col in ("step", "status", "s", "detail"):
        steps.add_column(col)
    for s in summary.steps:
        colour = "green" if s.status == "ok" else "red"
        steps.add_row(s.name, f"[{colour}]{s.status}[/{colour}]", f"{s.seconds:.1f}", s.detail)
    console.print(steps)
    if summary.versions:
        versions = Table(title="registry")
        for col in ("model", "version", "aliases", "metrics", "trigger", "decision"):
            versions.add_column(col)
        for v in summary.versions:
            keys = list(v.metrics)[:3]
            versions.add_row(
                v.model,
                v.version,
                ", ".join(f"@{a}" for a in v.aliases),
                ", ".join(filter(None, (_fmt(v.metrics, k) for k in keys))),
                v.trigger,
                v.decision,
            )
        console.print(versions)
    if summary.monitoring:
        mon = Table(title="monitoring (the scenario's monitoring runs)")
        for col in ("traffic", "version", "rows", "labelled", "drift share", "ROC-AUC", "decision"):
            mon.add_column(col)
        for m in summary.monitoring:
            auc = m.metrics.get("roc_auc")
            mon.add_row(
                m.traffic,
                m.model_version,
                str(m.window_rows),
                str(m.labelled_rows),
                "" if m.drift_share is None else f"{m.drift_share:.2f}",
                "" if auc is None else f"{auc:.3f}",
                f"retrain ({m.trigger}): {m.reasons}"
                if m.retrain
                else (f"not emitted ({m.trigger}): {m.reasons}" if m.trigger else "keep"),
            )
        console.print(mon)
    if summary.loop is not None and summary.loop.total_s:
        lp = summary.loop
        loop = Table(title=f"loop latency: v{lp.old_version} -> v{lp.new_version or '?'}")
        stages = {
            "detect": lp.detect_s,
            "trigger": lp.trigger_s,
            "worker start": lp.start_s,
            "retrain -> promoted": lp.retrain_s,
            "(of it gate)": lp.gate_s,
            "swap": lp.swap_s,
            "total": lp.total_s,
        }
        for col in stages:
            loop.add_column(col, justify="right")
        loop.add_row(*(f"{x:.1f} s" for x in stages.values()))
        console.print(loop)
    for k, v in summary.urls.items():
        console.print(f"{k:13s} {v}")
    state = "left running (--keep)" if keep else "stopped (use --keep to explore)"
    console.print(f"demo wall time {summary.wall_s:.0f} s; stack {state}")


def write_summary(summary: DemoSummary, path: Path) -> None:
    import json

    path.write_text(json.dumps(summary.as_dict(), indent=2, default=str), encoding="utf-8")
