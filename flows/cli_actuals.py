"""``shelfwise actuals <task> FILE``: realised actuals of a forecast task into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shelfwise.flows.cli_output import emit_json, stdout_to_stderr

console = Console(stderr=True)

TASK_ARG = "a declared forecast task (configs/tasks/<name>.yaml) or the path of a task YAML"


def ingest_file(task_ref: str, path: Path, store_url: str, data_dir: Path, source: str | None):
    """Validate ``path`` (CSV/Parquet in the task's columns) against the task's training data
    (its series and their period grid) and store it; returns the counts as a mapping."""
    from shelfwise.configs.datasets import TimeSeriesDatasetSpec
    from shelfwise.configs.loader import ConfigError
    from shelfwise.configs.tasks import TaskKind, load_task
    from shelfwise.models.datasets import read_table, resolve_data_path
    from shelfwise.monitoring.actuals import ActualsStore, SeriesCatalogue, validate_actuals

    task = load_task(task_ref)
    if task.kind is not TaskKind.forecast:
        raise ConfigError(f"task {task.name} is {task.kind.value}: actuals are for forecasts")
    spec = task.dataset_spec()
    assert isinstance(spec, TimeSeriesDatasetSpec)
    fmt = "parquet" if path.suffix.lower() in {".parquet", ".pq"} else "csv"
    rows = read_table(path, fmt, spec.encoding)
    training = read_table(resolve_data_path(spec.path, data_dir), spec.format, spec.encoding)
    import pandas as pd

    training[spec.time_column] = pd.to_datetime(training[spec.time_column], format=spec.date_format)
    catalogue = SeriesCatalogue.from_frame(training, spec)
    frame = validate_actuals(rows, spec, catalogue, task.data.negative_target)
    result = ActualsStore(store_url).upsert(
        task.name, frame, spec.series_keys, spec.regressors, source or f"file:{path.name}"
    )
    out: dict[str, Any] = {
        "task": task.name,
        "file": str(path),
        "rows": result.rows,
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "latest_period": frame["ds"].max().isoformat(),
    }
    return out


def actuals(
    task: str = typer.Argument(..., help=TASK_ARG),
    file: Path = typer.Argument(..., help="CSV/Parquet in the task's dataset columns"),
    source: str = typer.Option(None, help="who sent them (kept in the audit trail)"),
    platform_config: str = typer.Option("platform", "--platform"),
    json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Store realised actuals of a forecast task: validated like training data (errors name the
    row and the column; nothing stored), idempotent per series and period, corrections audited."""
    from shelfwise.flows.cli import _setup, user_errors
    from shelfwise.monitoring.actuals import ActualsError

    with stdout_to_stderr(json_out):
        platform = _setup(platform_config)
        with user_errors():
            try:
                out = ingest_file(task, file, platform.store_url, platform.data_dir, source)
            except ActualsError as exc:
                console.print(f"[red]error:[/red] {file}: {exc}")
                raise typer.Exit(2) from None
    if json_out:
        emit_json(out)
        return
    typer.echo(
        f"{out['task']}: {out['rows']} rows: {out['inserted']} new, {out['updated']} corrected, "
        f"{out['unchanged']} unchanged (latest period {out['latest_period']})"
    )


def register(app: typer.Typer) -> None:
    app.command("actuals")(actuals)
