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


Frequency = Literal["H", "D", "W", "M"]

# Season lengths per frequency, shortest first: the seasonal naive family uses the longest one
# the history allows, MASE's in-sample scale the shortest (configs/forecast.py).
SEASON_LENGTHS: dict[str, tuple[int, ...]] = {
    "H": (24, 168),
    "D": (7, 364),
    "W": (52,),
    "M": (12,),
}


class TimeSeriesDatasetSpec(StrictModel):
    """A panel of series. ``layout: long`` (default): one row per (series keys, time) with the
    target in one column. ``layout: wide``: one row per time, one column per series
    (``value_columns``, default every column but the time column and the regressors); the
    loader melts it into long form with the column name in ``series_column`` and the value in
    ``target``."""

    kind: Literal["timeseries"] = "timeseries"
    name: str
    path: Path
    format: Literal["csv", "parquet"] = "csv"
    encoding: str = "utf-8"
    time_column: str
    date_format: str | None = Field(None, description="strftime format, e.g. %d-%m-%Y; None = ISO")
    layout: Literal["long", "wide"] = "long"
    value_columns: list[str] | None = Field(
        None, description="wide layout: the series columns (None = all but time and regressors)"
    )
    series_column: str = Field("series", description="wide layout: the series key column made")
    series_keys: list[str] = Field(
        default_factory=list, description="long layout: required; wide: [series_column]"
    )
    target: str = Field("y", description="the value column (wide layout: the name it gets)")
    frequency: Frequency = Field("D", description="H (hourly), D, W or M (monthly)")
    regressors: list[str] = Field(
        default_factory=list, description="exogenous columns known in advance"
    )
    holidays_country: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _wide_key(cls, data):
        if isinstance(data, dict) and data.get("layout") == "wide" and not data.get("series_keys"):
            data = {**data, "series_keys": [data.get("series_column", "series")]}
        return data

    @model_validator(mode="after")
    def _layout_keys(self) -> TimeSeriesDatasetSpec:
        if self.layout == "wide":
            if self.series_keys != [self.series_column]:
                raise ValueError(
                    f"layout wide makes one key column {self.series_column!r} "
                    f"(series_column); series_keys {self.series_keys} cannot apply"
                )
        elif not self.series_keys:
            raise ValueError("series_keys: a long-layout time series needs at least one key")
        elif self.value_columns:
            raise ValueError("value_columns is for layout: wide only")
        return self

    @property
    def seasons(self) -> tuple[int, ...]:
        return SEASON_LENGTHS[self.frequency]


DatasetSpec = Annotated[TabularDatasetSpec | TimeSeriesDatasetSpec, Field(discriminator="kind")]


def load_tabular_spec(name_or_path: str | Path) -> TabularDatasetSpec:
    return load_config(resolve_config_path(name_or_path, "datasets"), TabularDatasetSpec)


def load_timeseries_spec(name_or_path: str | Path) -> TimeSeriesDatasetSpec:
    return load_config(resolve_config_path(name_or_path, "datasets"), TimeSeriesDatasetSpec)
