"""``shelfwise online``, ``shelfwise canary`` and ``shelfwise alarms``: a task's challenger on
live traffic (flows/online.py). Quick registry and store operations, no Prefect flow run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from shelfwise.flows.cli_output import emit_json, stdout_to_stderr

TASK_ARG = "a declared task (configs/tasks/<name>.yaml) or the path of a task YAML"


def _run(platform_config: str, json_out: bool, call: Callable[[Any], dict]) -> dict | None:
    """``call(platform)`` with user errors as exit 2 and, under ``--json``, every log line on
    stderr; the result to print, or None when it went out as JSON."""
    from shelfwise.flows.cli import _setup, user_errors

    with stdout_to_stderr(json_out):
        platform = _setup(platform_config)
        with user_errors():
            out = call(platform)
    if json_out:
        emit_json(out)
        return None
    return out


def online(
    task: str = typer.Argument(..., help=TASK_ARG),
    log: bool = typer.Option(True, help="tag the challenger, log the MLflow run and report"),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """The challenger vs @champion on the same labelled live requests (shadow or canary):
    each version's metric and the paired-difference CI, logged on the challenger's version."""
    from shelfwise.flows.cli import console
    from shelfwise.flows.online import compare_live

    out = _run(platform_config, json_out, lambda p: compare_live(p, task, log=log))
    if out is None:
        return
    metric, iv = out["metric"], out["interval"]
    console.print(
        f"{out['model_name']}: v{out['challenger_version']} (challenger) vs "
        f"v{out['champion_version']} (champion) on {out['labelled']} paired labelled requests"
    )
    for side in ("champion", "challenger"):
        value = out[f"{side}_value"]
        console.print(f"  {side} {metric}: {'-' if value is None else f'{value:.4f}'}")
    if iv is not None:
        console.print(
            f"  improvement {iv['improvement']:+.4f}, CI [{iv['low']:+.4f}, {iv['high']:+.4f}]"
            f" @ {iv['confidence']}"
        )
    if "check" in out:
        colour = "green" if out["check"]["passed"] else "yellow"
        console.print(f"  [{colour}]gate's online check:[/{colour}] {out['check']['detail']}")


def canary(
    task: str = typer.Argument(..., help=TASK_ARG),
    fraction: float = typer.Option(
        ..., "--fraction", min=0.0, max=1.0, help="share of entities, 0..1"
    ),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Ramp the canary: the share of entities the challenger answers (0 stops it). The
    service picks it up on its next alias poll."""
    from shelfwise.flows.cli import console
    from shelfwise.flows.online import set_canary

    out = _run(platform_config, json_out, lambda p: set_canary(p, task, fraction))
    if out is None:
        return
    console.print(f"{out['task']}: v{out['version']} answers {fraction:.0%} of entities")


def alarms(
    task: str = typer.Argument(..., help=TASK_ARG),
    act: bool = typer.Option(True, help="roll back when an alarm fires (else only report)"),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Check the task's alarms on its champion's live window; roll back to @previous when one
    fires (recorded, then a cooldown)."""
    from shelfwise.flows.cli import console
    from shelfwise.flows.online import check_task_alarms

    out = _run(platform_config, json_out, lambda p: check_task_alarms(p, task, act=act))
    if out is None:
        return
    state = "[red]fired[/red]" if out["fired"] else "[green]quiet[/green]"
    console.print(f"{out['model_name']} v{out['champion']}: alarms {state}")
    for reason in out["reasons"]:
        console.print(f"  - {reason}")
    if out.get("rolled_back"):
        console.print(f"  rolled back to v{out['rollback']['champion_after']}")
    if out.get("rollback_error"):
        console.print(f"  [red]not rolled back:[/red] {out['rollback_error']}")


def register(app: typer.Typer) -> None:
    for fn in (online, canary, alarms):
        app.command(fn.__name__)(fn)
