"""The ``shelfwise`` command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


# (module, exception class, exit code): a user's mistake exits 2, a server that is not there 1.
USER_ERRORS: tuple[tuple[str, str, int], ...] = (
    ("shelfwise.configs.loader", "ConfigError", 2),
    ("shelfwise.models.datasets", "DatasetError", 2),
    ("shelfwise.registry.aliases", "RegistryError", 2),
    ("shelfwise.registry.gate", "GateError", 2),
    ("shelfwise.registry.server", "ServerError", 1),
    ("shelfwise.monitoring.store", "StoreError", 1),
)


def user_error_code(exc: BaseException) -> int | None:
    """The exit code for a user's mistake, or None for a bug.

    Only modules already imported are looked at: an exception can only come from a module
    that was loaded, so a command that never touched the datasets never pays for importing
    them (and scikit-learn with them) just to be able to catch their errors."""
    for module_name, class_name, code in USER_ERRORS:
        cls = getattr(sys.modules.get(module_name), class_name, None)  # None: not imported
        if cls is not None and isinstance(exc, cls):
            return code
    return None


@contextmanager
def user_errors() -> Iterator[None]:
    """A user's mistake (bad config or data, no champion yet, a server that is not there) ends
    the command with its message and exit code 2 (1 for servers), not a traceback."""
    try:
        yield
    except Exception as exc:
        code = user_error_code(exc)
        if code is None:
            raise
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code) from None


def _setup(platform_config: str, verbose: bool = False):
    from shelfwise.configs.platform import load_platform_config
    from shelfwise.flows.environment import (
        configure_logging,
        configure_prefect_home,
        configure_prefect_logging,
    )

    configure_logging(verbose)
    configure_prefect_logging()  # before Prefect is imported: its logging set-up reads it
    with user_errors():  # a bad platform config: its file and key, exit 2
        platform = load_platform_config(platform_config)
    configure_prefect_home(platform.state_dir)
    return platform


@app.command()
def train(
    task: str = typer.Argument(..., help="a declared task (configs/tasks/<name>.yaml) or a path"),
    platform_config: str = typer.Option("platform", "--platform", help="platform config"),
    trigger: str = typer.Option("manual", help="what asked for this training"),
    extra_data: Path = typer.Option(
        None, help="extra labelled rows / realised actuals (CSV/Parquet) to train on"
    ),
    promote: bool = typer.Option(True, "--promote/--no-promote", help="gate the new version"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train every candidate family of a task, register the winner as @challenger, gate it."""
    with stdout_to_stderr(json_out):
        _setup(platform_config)
        with user_errors():
            from shelfwise.flows.tasks import run_step

            _, result = run_step(
                "train",
                task,
                platform_config=platform_config,
                trigger=trigger,
                extra_data=str(extra_data) if extra_data else None,
                promote=promote,
            )
    if json_out:
        emit_json(result)
    else:
        print_train_result(result)


def print_train_result(result: dict) -> None:
    """The candidates side by side (the winner first), the run and version links, the gate."""
    others: dict[str, dict[str, float]] = result.get("baseline_metrics") or {}
    winner = result.get("family") or "registered"
    columns = {winner: result.get("metrics") or {}, **others}
    table = Table(title=f"{result['model_name']} v{result['version']} ({winner} won)")
    table.add_column("metric")
    for family in columns:
        table.add_column(family, justify="right")
    names = dict.fromkeys(
        k for m in columns.values() for k, v in m.items() if isinstance(v, int | float)
    )
    for name in names:
        values = [m.get(name) for m in columns.values()]
        table.add_row(name, *("-" if v is None else f"{v:.4f}" for v in values))
    console.print(table)
    ui = result["tracking_uri"]
    console.print(f"run:      {ui}/#/experiments/{result['experiment_id']}/runs/{result['run_id']}")
    console.print(f"version:  {ui}/#/models/{result['model_name']}/versions/{result['version']}")
    gate = result.get("gate") or (result.get("extra") or {}).get("gate")
    if gate:
        from shelfwise.flows.cli_registry import _print_outcome

        _print_outcome(console, gate)


@app.command()
def tasks(
    platform_config: str = typer.Option("platform", "--platform", help="platform config"),
    registry: bool = typer.Option(
        True, "--registry/--no-registry", help="read champions from the tracking server"
    ),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """The declared tasks with their kind, candidates, champion version and headline metric."""
    with stdout_to_stderr(json_out):
        platform = _setup(platform_config)
        with user_errors():
            from shelfwise.configs.tasks import load_tasks
            from shelfwise.registry.promotion import task_rows

            client = None
            if registry:
                import mlflow

                from shelfwise.registry.tracking import ensure_tracking_uri

                mlflow.set_tracking_uri(ensure_tracking_uri(platform))
                client = mlflow.MlflowClient()
            rows = task_rows(client, load_tasks())
    if json_out:
        emit_json(rows)
        return
    table = Table(title=f"{len(rows)} declared task(s)")
    for col in ("task", "kind", "model", "candidates", "champion", "family", "metric"):
        table.add_column(col)
    for r in rows:
        value = r["metric_value"]
        table.add_row(
            r["task"],
            r["kind"],
            r["model"],
            ", ".join(r["candidates"]),
            f"v{r['champion']}" if r["champion"] else "-",
            r["family"] or "-",
            f"{r['metric']} {value:.4f}" if value is not None else f"{r['metric']} -",
        )
    console.print(table)


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

from shelfwise.flows.cli_keys import register as _register_keys  # noqa: E402

_register_keys(app)

from shelfwise.flows.cli_actuals import register as _register_actuals  # noqa: E402

_register_actuals(app)

from shelfwise.flows.cli_online import register as _register_online  # noqa: E402

_register_online(app)  # online, canary, alarms

from shelfwise.flows.cli_alerts import register as _register_alerts  # noqa: E402

_register_alerts(app)


def main() -> None:  # pragma: no cover - console script entry
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":  # python -m shelfwise.flows.cli (uses the code in the current directory)
    main()
