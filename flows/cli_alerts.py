"""``shelfwise alerts <task>``: stock alerts of a forecast task from the served champion, the
ingested actuals and on-hand stock (a file, else the task's ``inventory.positions``); each alert
opened is emitted as a Prefect event (``shelfwise.stock.alert``) for automations to act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from shelfwise.flows.cli_output import emit_json, stdout_to_stderr

console = Console()
STOCK_ALERT = "shelfwise.stock.alert"


def emit_stock_alert(task: str, alert: dict[str, Any]):
    """One Prefect event per opened alert, resource ``shelfwise.task.<task>``; None when events
    are disabled."""
    from prefect.events import emit_event

    payload = {k: v for k, v in alert.items() if k not in ("alert", "opened")}
    from shelfwise.flows.cli_output import jsonable

    return emit_event(
        event=STOCK_ALERT,
        resource={"prefect.resource.id": f"shelfwise.task.{task}", "prefect.resource.name": task},
        payload=jsonable(payload),
    )


def evaluate(task_ref: str, platform, positions: Path | None) -> dict[str, Any]:
    """Load the task's served version, evaluate every position, record the alerts."""
    from shelfwise.configs.actuals import InventorySettings
    from shelfwise.configs.loader import ConfigError
    from shelfwise.configs.tasks import TaskKind, load_task
    from shelfwise.monitoring.actuals import ActualsStore
    from shelfwise.monitoring.alerts import AlertStore
    from shelfwise.registry.aliases import RegistryError
    from shelfwise.registry.load import load_forecast_model, registry_client, resolve_alias
    from shelfwise.serving.alert_positions import file_positions
    from shelfwise.serving.current import LiveForecasts, stock_alerts
    from shelfwise.serving.forecast import ForecastInputError

    task = load_task(task_ref)
    if task.kind is not TaskKind.forecast or task.inventory is None:
        raise ConfigError(f"task {task.name} declares no inventory (a forecast task's key)")
    inventory: InventorySettings = task.inventory
    if positions is not None:
        inventory = inventory.model_copy(update={"positions": str(positions.resolve())})
    uri = platform.tracking.uri or f"http://{platform.tracking.host}:{platform.tracking.port}"
    name, alias = task.registered_model, task.serving.alias
    version = resolve_alias(registry_client(uri), name, alias)
    if version is None:
        raise RegistryError(f"{name}@{alias} does not exist: train the task first")
    model = load_forecast_model(uri, name, version)
    live = LiveForecasts(ActualsStore(platform.store_url))
    try:
        found = file_positions(model, inventory, Path(platform.data_dir))
        risks = stock_alerts(live, task.name, model, found, inventory, task.actuals)
    except ForecastInputError as exc:
        raise ConfigError(str(exc)) from None
    alerts = AlertStore(live.store.engine).record(task.name, risks, model.key_columns)
    alerts.sort(key=lambda a: -a["probability"])
    return {
        "task": task.name,
        "model_version": version,
        "lead_time": inventory.lead_time,
        "evaluated": len(risks),
        "alerts": alerts,
    }


def alerts(
    task: str = typer.Argument(..., help="a declared forecast task or the path of its YAML"),
    positions: Path = typer.Option(
        None, help="on-hand stock (CSV/Parquet: series keys + on_hand); default: declared file"
    ),
    emit: bool = typer.Option(True, help="emit a Prefect event per opened alert"),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Series whose stockout probability within the lead time exceeds the declared level, with
    the expected day of stockout, the shortfall, a severity band and the forecast version."""
    from shelfwise.flows.cli import _setup, user_errors

    with stdout_to_stderr(json_out):
        platform = _setup(platform_config)
        with user_errors():
            out = evaluate(task, platform, positions)
            if emit:
                for alert in out["alerts"]:
                    if alert["opened"]:
                        emit_stock_alert(out["task"], alert)
    if json_out:
        emit_json(out)
        return
    table = Table(title=f"{out['task']} v{out['model_version']}: stock alerts")
    for col in ("series", "severity", "P(stockout)", "stockout", "shortfall", "status"):
        table.add_column(col)
    for a in out["alerts"]:
        table.add_row(
            ", ".join(f"{k}={v}" for k, v in a["series"].items()),
            a["severity"],
            f"{a['probability']:.2f}",
            str(a["expected_stockout"] or "-"),
            f"{a['shortfall']:.1f}",
            a["status"],
        )
    console.print(table)
    console.print(f"{out['evaluated']} series evaluated, lead time {out['lead_time']}")


def register(app: typer.Typer) -> None:
    app.command("alerts")(alerts)
