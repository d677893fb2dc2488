"""`shelfwise demo`: the platform's loop on the real data against the local stack, as a list of
steps. Each step is a function of the shared ``DemoContext``; adding a stage of the loop (tune,
gate, serve, replay traffic, monitor -> retrain) is adding a function to ``demo_steps``.

Ends with a summary: steps and their times, the registry's versions (metrics, aliases,
decisions) and the URLs of the MLflow UI, the Prefect UI, the service's docs and the Evidently UI.
Without ``keep`` it stops the stack afterwards (as `shelfwise stack down` would), even the parts
that were already running; ``keep`` leaves everything up to explore.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from configs.delay import DelayRiskConfig
from configs.demo import DemoConfig, DemoTaskConfig
from configs.loader import ConfigError, read_yaml, resolve_config_path
from configs.platform import PlatformConfig
from configs.stack import StackConfig

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
class DemoSummary:
    reduced: bool
    steps: list[StepRecord] = field(default_factory=list)
    versions: list[VersionRow] = field(default_factory=list)
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


# --------------------------------------------------------------------------- helpers


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _deep_merge(out[k], v) if both else v
    return out


def model_config_for(ctx: DemoContext, task: DemoTaskConfig, name: str) -> str:
    """The model config the demo trains with: as configured, or with the ``reduced`` overrides
    written to ``<state>/demo/<name>.yaml`` (validated here, so a bad override fails early)."""
    if not ctx.reduced or not task.reduced:
        return task.config
    base_path = resolve_config_path(task.config)
    merged = _deep_merge(read_yaml(base_path), task.reduced)
    out = ctx.platform.state_path / "demo" / f"{name}.yaml"
    try:
        DelayRiskConfig.model_validate(merged) if name == "delay_risk" else None
    except Exception as exc:  # pydantic ValidationError
        raise ConfigError(f"configs/demo.yaml {name}.reduced over {base_path}: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    return str(out)


def run_flow(ctx: DemoContext, deployment: str, parameters: dict[str, Any]) -> str:
    """Run a deployment through the stack's worker; a failed run fails the step with its error."""
    from flows.deployments import run_deployment_and_wait

    outcome = run_deployment_and_wait(
        ctx.platform, deployment, parameters, ctx.demo.flow_run_timeout_s
    )
    ctx.summary.flow_runs.append({"deployment": deployment, **asdict(outcome)})
    if not outcome.ok:
        raise DemoError(
            f"flow run {outcome.name} of {deployment} ended {outcome.state}: {outcome.message} "
            f"(Prefect UI: {ctx.plan.prefect_ui_url}/runs/flow-run/{outcome.id})"
        )
    return f"flow run {outcome.name} completed in {outcome.seconds:.0f} s"


def registry_rows(tracking_uri: str, model: str) -> list[VersionRow]:
    """Every version of ``model`` with its metrics, aliases, trigger and gate decision (if any)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        aliases = client.get_registered_model(model).aliases or {}
    except MlflowException:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{model}'"):
        tags = mv.tags or {}
        metrics = {
            k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")
        }
        decision = next((v for k, v in tags.items() if k.endswith("decision")), "")
        rows.append(
            VersionRow(
                model=model,
                version=str(mv.version),
                aliases=sorted(by_version.get(str(mv.version), [])),
                metrics=metrics,
                trigger=tags.get("shelfwise.trigger", ""),
                decision=decision,
            )
        )
    return sorted(rows, key=lambda r: int(r.version))


# --------------------------------------------------------------------------- steps


def step_start_stack(ctx: DemoContext) -> str:
    from flows.stack import plan_stack, stack_up

    ctx.plan = plan_stack(ctx.platform, ctx.stack)
    states = stack_up(ctx.plan)
    ctx.summary.stack = [s.as_dict() for s in states]
    return ", ".join(f"{s.name}: {s.state}" for s in states if s.state != "disabled")


def step_deploy(ctx: DemoContext) -> str:
    from configs.deployments import load_deployments_config
    from flows.deployments import deploy

    if not ctx.demo.deploy:
        return "skipped (deploy: false)"
    result = deploy(load_deployments_config(), ctx.platform, ctx.plan.root, skip_unchanged=True)
    skipped = f"; not in this checkout: {', '.join(result.skipped)}" if result.skipped else ""
    verb = "already deployed:" if result.unchanged else "deployed"
    return f"{verb} {', '.join(result.deployed)}{skipped}"


def step_train_delay_risk(ctx: DemoContext) -> str:
    task = ctx.demo.delay_risk
    config = model_config_for(ctx, task, "delay_risk")
    return run_flow(ctx, task.deployment, {"config": config, "trigger": "manual"})


def step_summarise_registry(ctx: DemoContext) -> str:
    rows = registry_rows(ctx.plan.tracking_uri, "delay_risk")
    ctx.summary.versions.extend(rows)
    return f"delay_risk: {len(rows)} version(s)"


def demo_steps() -> list[DemoStep]:
    """The demo, in order. The other stages of the loop slot in here as they land."""
    return [
        DemoStep("start the stack", step_start_stack),
        DemoStep("deploy the flows", step_deploy),
        DemoStep("train delay risk", step_train_delay_risk),
        DemoStep("read the registry", step_summarise_registry),
    ]


# --------------------------------------------------------------------------- run + summary


def run_demo(
    platform: PlatformConfig,
    stack: StackConfig,
    demo: DemoConfig,
    reduced: bool = False,
    keep: bool = False,
    console: Console | None = None,
    steps: list[DemoStep] | None = None,
) -> DemoSummary:
    from flows.stack import stack_down, stack_urls

    console = console or Console()
    ctx = DemoContext(platform, stack, demo, reduced, console, DemoSummary(reduced=reduced))
    t0 = time.monotonic()
    try:
        for step in steps or demo_steps():
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
        cols = ("model", "version", "aliases", "roc_auc", "pr_auc", "brier", "trigger", "decision")
        for col in cols:
            versions.add_column(col)
        for v in summary.versions:
            m = v.metrics

            def fmt(k: str, m: dict = m) -> str:
                return f"{m[k]:.4f}" if k in m else ""

            versions.add_row(
                v.model,
                v.version,
                ", ".join(f"@{a}" for a in v.aliases),
                fmt("roc_auc"),
                fmt("pr_auc"),
                fmt("brier"),
                v.trigger,
                v.decision,
            )
        console.print(versions)
    for k, v in summary.urls.items():
        console.print(f"{k:13s} {v}")
    state = "left running (--keep)" if keep else "stopped (use --keep to explore)"
    console.print(f"demo wall time {summary.wall_s:.0f} s; stack {state}")


def write_summary(summary: DemoSummary, path: Path) -> None:
    import json

    path.write_text(json.dumps(summary.as_dict(), indent=2, default=str), encoding="utf-8")
