"""On-hand stock positions for stock alerts: posted in the request, or the task's declared
``inventory.positions`` file (the series key columns + ``inventory.on_hand_column``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shelfwise.configs.actuals import InventorySettings
from shelfwise.registry.load import LoadedForecastModel
from shelfwise.serving.forecast import ForecastInputError, series_keys


def positions_of(
    model: LoadedForecastModel, request: Any, inventory: InventorySettings, data_dir: Path
) -> list[tuple[dict[str, Any], float]]:
    """(series keys, on hand) per position; errors name ``positions[i]`` and the field."""
    if request.positions is not None:
        out = []
        for i, pos in enumerate(request.positions):
            try:
                out.append((series_keys(model, pos.series), float(pos.on_hand)))
            except ForecastInputError as exc:
                raise ForecastInputError(
                    f"positions[{i}]: {exc}", ("positions", str(i), *exc.loc), exc.status
                ) from None
        return out
    return file_positions(model, inventory, data_dir)


def file_positions(
    model: LoadedForecastModel, inventory: InventorySettings, data_dir: Path
) -> list[tuple[dict[str, Any], float]]:
    from shelfwise.models.datasets import DatasetError, read_table, resolve_data_path

    if inventory.positions is None:
        raise ForecastInputError(
            "no positions posted and the task declares no inventory.positions file",
            ("positions",),
        )
    path = resolve_data_path(Path(inventory.positions), data_dir)
    fmt = "parquet" if path.suffix.lower() in {".parquet", ".pq"} else "csv"
    try:
        table = read_table(path, fmt)
    except DatasetError as exc:
        raise ForecastInputError(str(exc), ("positions",)) from None
    column = inventory.on_hand_column
    missing = [c for c in [*model.key_columns, column] if c not in table.columns]
    if missing:
        raise ForecastInputError(f"{path}: missing column(s) {missing}", ("positions",))
    out = []
    for i, row in enumerate(table.to_dict("records")):
        series = {
            k: (int(row[k]) if k in model.integer_keys else row[k]) for k in model.key_columns
        }
        try:
            out.append((series_keys(model, series), float(row[column])))
        except ForecastInputError as exc:
            raise ForecastInputError(f"{path} row {i}: {exc}", ("positions",)) from None
    return out
