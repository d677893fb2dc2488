"""``shelfwise train demand-forecast``: run the flow and print the backtest table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def train_forecast(
    config: str | None, platform_config: str, trigger: str, actuals: str | None = None
) -> dict:
    from shelfwise.flows.forecast import train_demand_forecast

    return train_demand_forecast(
        config=config or "demand_forecast",
        platform_config=platform_config,
        trigger=trigger,
        actuals=actuals,
    )


def print_forecast_result(console: Console, result: dict) -> None:
    table = Table(title=f"{result['model_name']} v{result['version']} (latest backtest fold)")
    families = ["hybrid", *result["baseline_metrics"]]
    table.add_column("metric")
    for fam in families:
        table.add_column(fam, justify="right")
    for k in ("smape", "mase", "mae", "rmse", "coverage"):
        vals = [result["metrics"][k]] + [result["baseline_metrics"][f][k] for f in families[1:]]
        table.add_row(k, *(f"{v:.4f}" for v in vals))
    console.print(table)
    ui = result["tracking_uri"]
    console.print(f"run:      {ui}/#/experiments/{result['experiment_id']}/runs/{result['run_id']}")
    console.print(
        f"version:  {ui}/#/models/{result['model_name']}/versions/{result['version']} "
        "(alias @challenger)"
    )
    if result.get("gate"):
        from shelfwise.flows.cli_registry import _print_outcome

        _print_outcome(console, result["gate"])
