"""``shelfwise train demand-forecast``: run the flow and print the backtest table."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

console = Console()


def train_forecast(config: str | None, platform_config: str, trigger: str, json_out: bool) -> None:
    from shelfwise.flows.cli import user_errors
    from shelfwise.flows.forecast import train_demand_forecast

    with user_errors():
        result = train_demand_forecast(
            config=config or "demand_forecast", platform_config=platform_config, trigger=trigger
        )
    if json_out:
        console.print_json(json.dumps(result, default=float))
        return
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
