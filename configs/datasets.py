"""Dataset specs: how a user's CSV/Parquet maps onto a model's inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path


class TabularDatasetSpec(StrictModel):
    kind: Literal["tabular"] = "tabular"
    name: str
    path: Path = Field(description="CSV/Parquet file; relative paths resolve against data_dir")
    format: Literal["csv", "parquet"] = "csv"
    encoding: str = "utf-8"
    target: str
    id_column: str | None = None
    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    positive_label: int = 1

    @model_validator(mode="after")
    def _features_distinct(self) -> TabularDatasetSpec:
        overlap = set(self.categorical) & set(self.numeric)
        if overlap:
            raise ValueError(f"columns listed as both categorical and numeric: {sorted(overlap)}")
        if self.target in set(self.categorical) | set(self.numeric):
            raise ValueError(f"target {self.target!r} is also listed as a feature")
        if not (self.categorical or self.numeric):
            raise ValueError("a tabular dataset needs at least one categorical or numeric feature")
        return self

    @property
    def features(self) -> list[str]:
        return [*self.categorical, *self.numeric]


class TimeSeriesDatasetSpec(StrictModel):
    kind: Literal["timeseries"] = "timeseries"
    name: str
    path: Path
    format: Literal["csv", "parquet"] = "csv"
    encoding: str = "utf-8"
    time_column: str
    date_format: str | None = Field(None, description="strftime format, e.g. %d-%m-%Y; None = ISO")
    series_keys: list[str] = Field(min_length=1)
    target: str
    frequency: Literal["D", "W"] = "D"
    regressors: list[str] = Field(
        default_factory=list, description="exogenous columns known in advance"
    )
    holidays_country: str | None = None


DatasetSpec = Annotated[TabularDatasetSpec | TimeSeriesDatasetSpec, Field(discriminator="kind")]


def load_tabular_spec(name_or_path: str | Path) -> TabularDatasetSpec:
    return load_config(resolve_config_path(name_or_path, "datasets"), TabularDatasetSpec)


def load_timeseries_spec(name_or_path: str | Path) -> TimeSeriesDatasetSpec:
    return load_config(resolve_config_path(name_or_path, "datasets"), TimeSeriesDatasetSpec)
