"""``shelfwise monitor`` and ``shelfwise retrain``: the monitoring flow and its retraining."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from shelfwise.flows.cli_output import emit_json, stdout_to_stderr
from shelfwise.flows.tasks import run_step

console = Console()


TASK_ARG = "a declared task (configs/tasks/<name>.yaml) or the path of a task YAML"


def monitor(
    task: str = typer.Argument(..., help=TASK_ARG),
    actuals: str = typer.Option(
        None, help="forecast tasks: realised actuals (CSV/Parquet in the data set's columns)"
    ),
    platform_config: str = typer.Option("platform", "--platform"),
    emit: bool = typer.Option(True, help="emit the retrain event when the policy fires"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Drift and performance of the served champion (on feedback, or on realised actuals for a
    forecast), KPIs; decide whether to retrain."""
    from shelfwise.flows.cli import _setup, user_errors

    with stdout_to_stderr(json_out):
        _setup(platform_config)
        with user_errors():
            extra = {"actuals": actuals} if actuals else {}
            declaration, result = run_step(
                "monitor", task, platform_config=platform_config, emit=emit, **extra
            )
    if json_out or declaration.kind.value == "forecast":
        emit_json(result)
        return
    table = Table(title=f"{result['model_name']} v{result['model_version']} monitoring")
    table.add_column("what")
    table.add_column("value", justify="right")
    share = result["drift_share"]
    table.add_row("window rows", str(result["window_rows"]))
    table.add_row("labelled rows", str(result["labelled_rows"]))
    table.add_row("drift share", "-" if share is None else f"{share:.2f}")
    table.add_row("drifted columns", ", ".join(result["drifted_columns"]) or "-")
    perf = result["performance"] or {}
    for k, v in perf.items():
        table.add_row(f"feedback {k}", f"{v:.4f}")
    kpis = result["kpis"]
    if kpis:
        table.add_row("predictions (30 d)", str(kpis["orders"]))
        table.add_row("high-risk", str(kpis["high_risk_orders"]))
        on_time = kpis["on_time_rate"]
        table.add_row("negative-class rate", "-" if on_time is None else f"{on_time:.1%}")
        for seg, values in kpis["segment_risk"].items():
            table.add_row(f"risk by {seg}", ", ".join(f"{k}={v:.2f}" for k, v in values.items()))
    decision = result["decision"]
    table.add_row("decision", "RETRAIN" if decision["retrain"] else "keep champion")
    table.add_row("reasons", "; ".join(decision["reasons"] + decision["suppressed"]))
    console.print(table)


def retrain(
    task: str = typer.Argument(..., help=TASK_ARG),
    actuals: str = typer.Option(None, help="forecast tasks: the realised actuals to add"),
    trigger: str = typer.Option("manual"),
    reason: str = typer.Option(""),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Retrain on the original data plus feedback-labelled production rows (or the realised
    actuals of a forecast), then gate."""
    from shelfwise.flows.cli import _setup, user_errors

    with stdout_to_stderr(json_out):
        _setup(platform_config)
        with user_errors():
            extra = {"actuals": actuals} if actuals else {}
            _, result = run_step(
                "retrain",
                task,
                trigger=trigger,
                reason=reason,
                platform_config=platform_config,
                **extra,
            )
    if json_out:
        emit_json(result)
        return
    gate = result.get("gate") or result.get("extra", {}).get("gate", {})
    console.print(f"{result['model_name']} v{result['version']}: gate {gate.get('decision', '-')}")


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
    app.command("retrain")(retrain)
