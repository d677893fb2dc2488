"""``shelfwise monitor`` and ``shelfwise retrain``: the monitoring flow and its retraining."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from shelfwise.flows.cli_output import emit_json, stdout_to_stderr

console = Console()


def monitor(
    config: str = typer.Option("monitoring", help="monitoring config name or YAML path"),
    platform_config: str = typer.Option("platform", "--platform"),
    emit: bool = typer.Option(True, help="emit the retrain event when the policy fires"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Drift, performance on feedback and fulfilment KPIs of the served champion; decide."""
    from shelfwise.flows.cli import _setup, user_errors

    with stdout_to_stderr(json_out):
        _setup(platform_config)
        from shelfwise.flows.monitor import monitor_delay_risk

        with user_errors():
            result = monitor_delay_risk(config=config, platform_config=platform_config, emit=emit)
    if json_out:
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
    for k in ("roc_auc", "brier"):
        if k in perf:
            table.add_row(f"feedback {k}", f"{perf[k]:.4f}")
    kpis = result["kpis"]
    table.add_row("orders (30 d)", str(kpis["orders"]))
    table.add_row("high-risk orders", str(kpis["high_risk_orders"]))
    on_time = kpis["on_time_rate"]
    table.add_row("on-time rate", "-" if on_time is None else f"{on_time:.1%}")
    for seg, values in kpis["segment_risk"].items():
        table.add_row(f"risk by {seg}", ", ".join(f"{k}={v:.2f}" for k, v in values.items()))
    decision = result["decision"]
    table.add_row("decision", "RETRAIN" if decision["retrain"] else "keep champion")
    table.add_row("reasons", "; ".join(decision["reasons"] + decision["suppressed"]))
    console.print(table)


def retrain(
    model: str = typer.Argument("delay_risk"),
    trigger: str = typer.Option("manual"),
    reason: str = typer.Option(""),
    config: str = typer.Option("monitoring"),
    platform_config: str = typer.Option("platform", "--platform"),
) -> None:
    """Retrain on the original data plus feedback-labelled production rows, then gate."""
    from shelfwise.flows.cli import _setup, user_errors
    from shelfwise.flows.monitor import retrain_delay_risk

    _setup(platform_config)
    with user_errors():
        result = retrain_delay_risk(
            model=model,
            trigger=trigger,
            reason=reason,
            config=config,
            platform_config=platform_config,
        )
    gate = result.get("extra", {}).get("gate", {})
    console.print(f"{result['model_name']} v{result['version']}: gate {gate.get('decision', '-')}")


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
    app.command("retrain")(retrain)
