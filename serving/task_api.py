"""Request and response models of each declared task, generated from its dataset spec.

A tabular task (classification, regression) gets:

- a request model: one field per feature column of the spec (categorical -> string; numeric ->
  number, or boolean where the data file stores booleans), each required; ``null`` is
  accepted only when the task's ``data.missing`` is not ``error``. Field names are the column
  names unless ``serving.fields`` renames them (a column -> field map). Plus the optional
  ``serving.id_field`` (default ``id``: the spec's id_column, kept in the prediction log) and
  ``explain: bool = false``. Unknown fields are refused (4xx naming them). The JSON-schema
  example is the data file's first row (a neutral row from the spec alone when the file is not
  there, e.g. in a Bento);
- a batch input model ``{<serving.batch_field>: [request, ...]}``;
- a response model: prediction_id, task, model_version, the id field, the prediction under
  ``task.prediction_field`` (classification: the positive class's probability, plus
  ``severity``), and ``contributions`` + ``explanation`` when the request asked for them.

A forecast task gets today's forecast request (series keys -> values, horizon, inventory inputs)
with an example built from its spec's series keys and first data row.

Only configuration and (cheaply) the first rows of the data file are read here: the service
builds these models at import, when BentoML's decorators need them.
"""

from __future__ import annotations

import keyword
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, create_model

from shelfwise.configs.datasets import TabularDatasetSpec, TimeSeriesDatasetSpec
from shelfwise.configs.tasks import TaskDeclaration, TaskKind
from shelfwise.serving.schemas import ForecastRequest, ForecastResponse

logger = logging.getLogger(__name__)

EXAMPLE_ROWS = 200  # rows read to take the example and the column types from
Severity = Literal["critical", "warning", "info", "none"]


class Contribution(BaseModel):
    feature: str = Field(description="request field")
    contribution: float


class ExplanationInfo(BaseModel):
    method: str = Field(
        description="xgboost_treeshap | linear_coefficient_x_value | tree_path_attribution | none"
    )
    units: str = Field(description="what base_value + sum(contributions) adds up to")
    base_value: float


def _class_name(task: TaskDeclaration, suffix: str) -> str:
    return "".join(part.capitalize() for part in task.name.split("_")) + suffix


def read_head(path: Path, fmt: str, encoding: str, n: int = EXAMPLE_ROWS) -> pd.DataFrame | None:
    """The first ``n`` rows of a data file, or None when it cannot be read (no data shipped)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            batch = next(pq.ParquetFile(path).iter_batches(batch_size=n), None)
            return batch.to_pandas() if batch is not None else None
        return pd.read_csv(path, nrows=n, encoding=encoding)
    except Exception as exc:  # an example is a nicety: never stop the service over it
        logger.info("no example rows from %s: %s", path, exc)
        return None


def data_head(spec: TabularDatasetSpec | TimeSeriesDatasetSpec) -> pd.DataFrame | None:
    import os

    from shelfwise.configs.platform import load_platform_config
    from shelfwise.models.datasets import resolve_data_path

    try:
        platform = load_platform_config(os.environ.get("SHELFWISE_PLATFORM_CONFIG", "platform"))
    except Exception:
        return None
    path = resolve_data_path(spec.path, Path(platform.data_dir))
    return read_head(path, spec.format, spec.encoding)


def _json_value(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class TabularApi:
    """The generated models of one tabular task and the maps between fields and columns."""

    task: TaskDeclaration
    spec: TabularDatasetSpec
    request: type[BaseModel]
    batch_input: type[BaseModel]
    response: type[BaseModel]
    attr_of_column: dict[str, str]  # dataset column -> python attribute of the request model
    field_of_column: dict[str, str]  # dataset column -> request (JSON) field name
    id_attr: str
    example: dict[str, Any]

    @property
    def id_field(self) -> str:
        return self.task.serving.id_field

    @property
    def batch_field(self) -> str:
        return self.task.serving.batch_field

    def row(self, request: BaseModel) -> dict[str, Any]:
        """The dataset spec's columns, as the model expects them."""
        return {col: getattr(request, attr) for col, attr in self.attr_of_column.items()}

    def request_id(self, request: BaseModel) -> str | None:
        value = getattr(request, self.id_attr)
        return None if value is None else str(value)

    def payload(self, row: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
        """A dataset row (column names) as this task's request JSON (field names, types)."""
        out: dict[str, Any] = {}
        if request_id is not None:
            out[self.id_field] = request_id
        for col, name in self.field_of_column.items():
            value = _json_value(row[col])
            if value is not None and col in self.spec.numeric and not isinstance(value, bool):
                value = as_number(value)
            out[name] = value
        return out


def as_number(value: Any) -> float:
    """A numeric column's value as a number: booleans written as words (TRUE/FALSE, yes/no)
    are 1/0, as training reads them (models/datasets.py)."""
    from shelfwise.models.datasets import FALSE_WORDS, TRUE_WORDS

    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return float(value.strip().lower() in TRUE_WORDS)
    return float(value)


MAX_ABS_NUMBER = 1e15  # beyond this a float32 feature matrix (XGBoost) loses the value or overflows
Number = Annotated[StrictFloat, Field(ge=-MAX_ABS_NUMBER, le=MAX_ABS_NUMBER)]


def _numeric_type(series: pd.Series | None) -> Any:
    """A number (an integer is a number too); a boolean when the file stores booleans."""
    if series is not None and pd.api.types.is_bool_dtype(series):
        return StrictBool
    return Number


def _safe_attr(name: str, i: int, taken: set[str]) -> str:
    attr = name if name.isidentifier() and not keyword.iskeyword(name) else f"f{i}"
    if attr.startswith("_") or attr.startswith("model_") or hasattr(BaseModel, attr):
        attr = f"f{i}"
    while attr in taken:
        attr = f"{attr}_"
    taken.add(attr)
    return attr


def tabular_api(
    task: TaskDeclaration, max_batch_size: int = 256, head: pd.DataFrame | None = None
) -> TabularApi:
    spec = task.dataset_spec()
    assert isinstance(spec, TabularDatasetSpec)
    if head is None:
        head = data_head(spec)
    nullable = task.data.missing != "error"
    renames = task.serving.fields
    unknown = sorted(set(renames) - set(spec.features))
    if unknown:
        raise ValueError(f"task {task.name}: serving.fields names non-feature columns {unknown}")
    fields: dict[str, Any] = {}
    attr_of: dict[str, str] = {}
    field_of: dict[str, str] = {}
    taken = {"explain"}
    example: dict[str, Any] = {}
    first = head.iloc[0] if head is not None and len(head) else None
    id_field = task.serving.id_field
    id_attr = _safe_attr(id_field, 0, taken)
    fields[id_attr] = (
        StrictInt | Annotated[str, Field(min_length=1, max_length=128)] | None,
        Field(None, alias=id_field, title=id_field, description=f"row id ({spec.id_column})"),
    )
    if first is not None and spec.id_column and spec.id_column in head.columns:
        example[id_field] = str(_json_value(first[spec.id_column]))
    for i, col in enumerate(spec.features, start=1):
        name = renames.get(col, col)
        attr = _safe_attr(name, i, taken)
        attr_of[col], field_of[col] = attr, name
        if col in spec.categorical:
            kind: Any = Annotated[str, Field(max_length=256)]
            default: Any = "?"
            desc = f"categorical column {col!r}"
        else:
            kind = _numeric_type(head[col] if head is not None and col in head.columns else None)
            default = False if kind is StrictBool else 0
            desc = f"numeric column {col!r}"
        if nullable:
            kind = kind | None
            desc += " (null: missing)"
        fields[attr] = (kind, Field(..., alias=name, title=name, description=desc))
        value = _json_value(first[col]) if first is not None and col in head.columns else default
        if value is not None:
            base = kind if not nullable else kind.__args__[0]
            cast = {StrictBool: bool, Number: as_number}.get(base, str)
            value = cast(value)
        example[name] = value
    fields["explain"] = (
        StrictBool,
        Field(False, description="add the top feature contributions to the answer"),
    )
    example["explain"] = False
    config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        populate_by_name=True,
        protected_namespaces=(),
        json_schema_extra={"example": example},
    )
    request = create_model(_class_name(task, "Request"), __config__=config, **fields)
    request.__doc__ = (
        f"One row to score for task {task.name} ({task.kind.value}): the features of dataset "
        f"{spec.name}. Unknown fields are refused."
    )
    batch = create_model(
        _class_name(task, "BatchRequest"),
        __config__=ConfigDict(extra="forbid"),
        **{
            "rows": (
                Annotated[list[request], Field(min_length=1, max_length=max_batch_size)],  # type: ignore[valid-type]
                Field(..., alias=task.serving.batch_field, title=task.serving.batch_field),
            )
        },
    )
    out: dict[str, Any] = {
        "prediction_id": (str, ...),
        "task": (str, ...),
        "model_version": (str, ...),
        "row_id": (str | None, Field(None, alias=id_field, title=id_field)),
    }
    pred = task.prediction_field
    if task.kind is TaskKind.classification:
        out["prediction"] = (
            float,
            Field(..., ge=0, le=1, alias=pred, title=pred, description="P(positive class)"),
        )
        out["severity"] = (Severity | None, Field(None, description="band of the probability"))
    else:
        out["prediction"] = (float, Field(..., alias=pred, title=pred))
    out["contributions"] = (
        list[Contribution] | None,
        Field(None, description="top feature contributions (explain: true)"),
    )
    out["explanation"] = (ExplanationInfo | None, None)
    response = create_model(
        _class_name(task, "Response"),
        __config__=ConfigDict(populate_by_name=True, serialize_by_alias=True),
        **out,
    )
    return TabularApi(
        task=task,
        spec=spec,
        request=request,
        batch_input=batch,
        response=response,
        attr_of_column=attr_of,
        field_of_column=field_of,
        id_attr=id_attr,
        example=example,
    )


@dataclass(frozen=True)
class ForecastApi:
    task: TaskDeclaration
    spec: TimeSeriesDatasetSpec
    request: type[ForecastRequest]
    response: type[ForecastResponse]
    example: dict[str, Any]


def forecast_api(task: TaskDeclaration, head: pd.DataFrame | None = None) -> ForecastApi:
    spec = task.dataset_spec()
    assert isinstance(spec, TimeSeriesDatasetSpec)
    if head is None:
        head = data_head(spec)
    first = head.iloc[0] if head is not None and len(head) else None
    series = {
        key: (_json_value(first[key]) if first is not None and key in head.columns else 1)
        for key in spec.series_keys
    }
    example = {"series": series, "horizon": 7, "on_hand": 400.0, "lead_time": 7}
    example["service_level"] = 0.95
    keys = ", ".join(spec.series_keys)
    request = type(
        _class_name(task, "ForecastRequest"),
        (ForecastRequest,),
        {
            "__doc__": f"A forecast of one {task.name} series (keys: {keys}) for the next "
            "``horizon`` periods; with lead_time and service_level also safety stock and "
            "reorder point, with on_hand the stockout probability.",
            "model_config": ConfigDict(
                **{**ForecastRequest.model_config, "json_schema_extra": {"example": example}}
            ),
            "__module__": __name__,
        },
    )
    response = type(
        _class_name(task, "ForecastResponse"), (ForecastResponse,), {"__module__": __name__}
    )
    return ForecastApi(task=task, spec=spec, request=request, response=response, example=example)


def task_routes(task: TaskDeclaration) -> dict[str, list[str]]:
    """``{"predict": [...], "batch": [...]}`` (tabular) or ``{"forecast": [...]}``: the task's
    own route first, then its legacy route if it declares one."""
    base = f"/v1/{task.url_path}"
    legacy = task.serving.legacy_routes
    kinds = ("forecast",) if task.kind is TaskKind.forecast else ("predict", "batch")
    out: dict[str, list[str]] = {}
    for kind in kinds:
        routes = [f"{base}/{kind}"]
        if getattr(legacy, kind) and getattr(legacy, kind) not in routes:
            routes.append(getattr(legacy, kind))
        out[kind] = routes
    return out
