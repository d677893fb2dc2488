"""The ``shelfwise`` command line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shelfwise.flows import cli_serving
from shelfwise.flows.cli_output import emit_json, stdout_to_stderr

app = typer.Typer(
    help="Shelfwise: registry-centred ML lifecycle for retail operations.", no_args_is_help=True
)
server_app = typer.Typer(help="Local servers (MLflow tracking server).", no_args_is_help=True)
app.add_typer(server_app, name="server")
app.command("serve")(cli_serving.serve)
console = Console()


class Task(StrEnum):
    delay_risk = "delay-risk"
    demand_forecast = "demand-forecast"


@contextmanager
def user_errors() -> Iterator[None]:
    """A user's mistake (bad config or data, no champion yet, a server that is not there) ends
    the command with its message and exit code 2 (1 for servers), not a traceback."""
    from shelfwise.configs.loader import ConfigError
    from shelfwise.models.datasets import DatasetError
    from shelfwise.monitoring.store import StoreError
    from shelfwise.registry.aliases import RegistryError
    from shelfwise.registry.gate import GateError
    from shelfwise.registry.server import ServerError

    try:
        yield
    except (ConfigError, DatasetError, RegistryError, GateError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (ServerError, StoreError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _setup(platform_config: str, verbose: bool = False):
    from shelfwise.configs.loader import ConfigError
    from shelfwise.configs.platform import load_platform_config
    from shelfwise.flows.environment import (
        configure_logging,
        configure_prefect_home,
        configure_prefect_logging,
    )

    configure_logging(verbose)
    configure_prefect_logging()  # before Prefect is imported: its logging set-up reads it
    try:
        platform = load_platform_config(platform_config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    configure_prefect_home(platform.state_dir)
    return platform


@app.command()
def train(
    task: Task = typer.Argument(..., help="which model to train"),
    config: str = typer.Option(None, help="model config name or YAML path"),
    platform_config: str = typer.Option("platform", "--platform", help="platform config"),
    trigger: str = typer.Option("manual", help="what asked for this training"),
    extra_data: Path = typer.Option(
        None, help="extra labelled rows / realised actuals (CSV/Parquet) to train on"
    ),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train a model, log it to MLflow and register a new version."""
    extra = str(extra_data) if extra_data else None
    with stdout_to_stderr(json_out):
        _setup(platform_config)
        with user_errors():
            if task is Task.demand_forecast:
                from shelfwise.flows.cli_forecast import train_forecast

                result = train_forecast(config, platform_config, trigger, extra)
            else:
                result = _train_delay(config, platform_config, trigger, extra)
    if json_out:
        emit_json(result)
    elif task is Task.demand_forecast:
        from shelfwise.flows.cli_forecast import print_forecast_result

        print_forecast_result(console, result)
    else:
        _print_delay_result(result)


def _train_delay(config: str | None, platform_config: str, trigger: str, extra: str | None):
    from shelfwise.flows.train import train_delay_risk

    return train_delay_risk(
        config=config or "delay_risk",
        platform_config=platform_config,
        trigger=trigger,
        extra_data=extra,
    )


def _print_delay_result(result: dict) -> None:
    table = Table(title=f"{result['model_name']} v{result['version']}")
    table.add_column("metric")
    table.add_column("xgboost", justify="right")
    table.add_column("logreg baseline", justify="right")
    for k in ("roc_auc", "pr_auc", "accuracy", "f1", "brier", "log_loss", "ece"):
        table.add_row(k, f"{result['metrics'][k]:.4f}", f"{result['baseline_metrics'][k]:.4f}")
    console.print(table)
    ui = result["tracking_uri"]
    console.print(f"run:      {ui}/#/experiments/{result['experiment_id']}/runs/{result['run_id']}")
    console.print(f"version:  {ui}/#/models/{result['model_name']}/versions/{result['version']}")
    console.print(f"MLflow UI: {ui}")
    if result["extra"].get("gate"):
        from shelfwise.flows.cli_registry import _print_outcome

        _print_outcome(console, result["extra"]["gate"])


@server_app.command("start")
def server_start(platform_config: str = typer.Option("platform", "--platform")) -> None:
    """Start the local MLflow tracking server (reused if already running)."""
    platform = _setup(platform_config)
    from shelfwise.registry.tracking import ensure_tracking_uri

    with user_errors():
        uri = ensure_tracking_uri(platform)
    console.print(f"MLflow UI: {uri}")


@server_app.command("stop")
def server_stop(platform_config: str = typer.Option("platform", "--platform")) -> None:
    """Stop the local MLflow tracking server started by Shelfwise."""
    platform = _setup(platform_config)
    from shelfwise.registry.tracking import stop_tracking_server

    stopped = stop_tracking_server(platform)
    console.print("stopped" if stopped else "not running")


from shelfwise.flows.cli_stack import register as _register_stack  # noqa: E402 (stack, deploy, demo)

_register_stack(app)

from shelfwise.flows.cli_registry import register as _register_registry_commands  # noqa: E402

_register_registry_commands(app)

from shelfwise.flows.cli_monitor import register as _register_monitor  # noqa: E402

_register_monitor(app)


def main() -> None:  # pragma: no cover - console script entry
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":  # python -m shelfwise.flows.cli (uses the code in the current directory)
    main()
