"""CLI: `shelfwise stack up|down|status`, `shelfwise deploy`, `shelfwise demo`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shelfwise.flows.cli_output import emit_json, stdout_to_stderr

stack_app = typer.Typer(
    help="The local stack: MLflow, Prefect server + worker, BentoML, Evidently UI.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

_STYLE = {
    "started": "green",
    "reused": "cyan",
    "running": "green",
    "created": "green",
    "external": "cyan",
    "stopped": "yellow",
    "not running": "dim",
    "disabled": "dim",
    "unhealthy": "red",
    "missing": "red",
    "failed": "red",
}


def _platform_and_stack(platform_config: str, stack_config: str):
    from shelfwise.configs.loader import ConfigError
    from shelfwise.configs.stack import load_stack_config
    from shelfwise.flows.cli import _setup

    platform = _setup(platform_config)
    try:
        stack = load_stack_config(stack_config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    return platform, stack


def _plan(platform_config: str, stack_config: str, serving: bool | None = None):
    from shelfwise.flows.stack import plan_stack

    platform, stack = _platform_and_stack(platform_config, stack_config)
    return plan_stack(platform, stack, serving=serving)


def _table(title: str, states) -> Table:
    table = Table(title=title)
    for col in ("component", "state", "pid", "url", "startup s"):
        table.add_column(col, overflow="fold")
    for s in states:
        style = _STYLE.get(s.state, "")
        table.add_row(
            str(s.component),
            f"[{style}]{s.state}[/{style}]" if style else s.state,
            str(s.pid or ""),
            s.url or s.detail or "",
            f"{s.startup_s:.1f}" if s.startup_s is not None else "",
        )
    return table


def _print_states(title: str, states, as_json: bool) -> None:
    if as_json:
        emit_json([s.as_dict() for s in states])
    else:
        console.print(_table(title, states))
        logs = {str(Path(s.log_file).parent) for s in states if s.log_file}
        if logs:
            console.print(f"logs: {', '.join(sorted(logs))}")


PLATFORM_OPT = typer.Option("platform", "--platform", help="platform config name or YAML path")
STACK_OPT = typer.Option("stack", "--stack", help="stack config name or YAML path")
JSON_OPT = typer.Option(False, "--json", help="print JSON")


@stack_app.command("up")
def up(
    platform_config: str = PLATFORM_OPT,
    stack_config: str = STACK_OPT,
    serving: bool = typer.Option(
        None, "--serving/--no-serving", help="start the BentoML service (default: if present)"
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Start the local stack (reusing what already runs); health-checked; logs in <state>/logs."""
    from shelfwise.flows.stack import StackError, stack_up, stack_urls

    with stdout_to_stderr(as_json):
        plan = _plan(platform_config, stack_config, serving)
        try:
            states = stack_up(plan)
        except StackError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    _print_states("shelfwise stack", states, as_json)
    if not as_json:
        for k, v in stack_urls(plan).items():
            console.print(f"{k:13s} {v}")
    failed = [s for s in states if s.state == "failed"]
    for s in failed:
        err_console.print(f"[red]{s.name} did not come up:[/red] {s.detail}")
    if failed:
        raise typer.Exit(1)


@stack_app.command("down")
def down(
    platform_config: str = PLATFORM_OPT, stack_config: str = STACK_OPT, as_json: bool = JSON_OPT
) -> None:
    """Stop every process the stack started (process groups, flow runs included)."""
    from shelfwise.flows.stack import stack_down

    with stdout_to_stderr(as_json):
        states = stack_down(_plan(platform_config, stack_config))
    _print_states("shelfwise stack down", states, as_json)


@stack_app.command("status")
def status(
    platform_config: str = PLATFORM_OPT, stack_config: str = STACK_OPT, as_json: bool = JSON_OPT
) -> None:
    """Health of each component; exit code 1 if a component is down or the work pool is missing."""
    from shelfwise.flows.stack import stack_status

    with stdout_to_stderr(as_json):
        states = stack_status(_plan(platform_config, stack_config))
    _print_states("shelfwise stack status", states, as_json)
    if any(s.state in {"stopped", "unhealthy", "missing"} for s in states):
        raise typer.Exit(1)


def deploy_command(
    names: list[str] = typer.Option(None, "--name", "-n", help="only these deployments"),
    platform_config: str = PLATFORM_OPT,
    deployments_config: str = typer.Option("deployments", "--deployments"),
    prefect_file: Path = typer.Option(None, help="where to render prefect.yaml (default: root)"),
    render_only: bool = typer.Option(False, "--render-only", help="write prefect.yaml only"),
) -> None:
    """Render prefect.yaml from configs and `prefect deploy` it to the stack's Prefect server."""
    from shelfwise.configs.deployments import load_deployments_config
    from shelfwise.configs.loader import ConfigError
    from shelfwise.flows.cli import _setup
    from shelfwise.flows.deployments import DeployError, deploy, write_prefect_yaml
    from shelfwise.flows.stack import StackError, project_root

    platform = _setup(platform_config)
    root = project_root()
    try:
        cfg = load_deployments_config(deployments_config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    target = prefect_file or root / "prefect.yaml"
    if render_only:
        changed = write_prefect_yaml(target, cfg, platform)
        console.print(f"{target}: {'updated' if changed else 'up to date'}")
        return
    try:
        result = deploy(cfg, platform, root, target, names or None)
    except (DeployError, StackError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    for n in result.deployed:
        console.print(f"[green]deployed[/green] {n}")
    for n, why in result.skipped.items():
        if n not in result.deployed:
            console.print(f"[yellow]skipped[/yellow]  {n}: {why}")


def demo_command(
    keep: bool = typer.Option(False, "--keep", help="leave the stack running afterwards"),
    reduced: bool = typer.Option(False, "--reduced", help="CI size: smaller models, fewer folds"),
    platform_config: str = PLATFORM_OPT,
    stack_config: str = STACK_OPT,
    demo_config: str = typer.Option("demo", "--demo", help="demo config name or YAML path"),
    summary_json: Path = typer.Option(None, help="also write the summary as JSON here"),
) -> None:
    """Run the platform's loop end to end on the real data and print what it did."""
    from shelfwise.configs.demo import load_demo_config
    from shelfwise.configs.loader import ConfigError
    from shelfwise.flows.demo import DemoError, run_demo

    platform, stack = _platform_and_stack(platform_config, stack_config)
    try:
        demo_cfg = load_demo_config(demo_config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    try:
        # a log file or CI console is not a terminal: keep the summary tables readable there
        out = console if console.is_terminal else Console(width=160)
        summary = run_demo(platform, stack, demo_cfg, reduced=reduced, keep=keep, console=out)
    except DemoError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    if summary_json:
        summary_json.write_text(json.dumps(summary.as_dict(), indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
    app.command("deploy")(deploy_command)
    app.command("demo")(demo_command)
