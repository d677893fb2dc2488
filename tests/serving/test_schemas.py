"""Request and response models generated from a task's dataset spec (serving/task_api.py): the
fields are the spec's features (renamed where the task says so), bad input is refused naming the
field, the example is the data file's first row, and no code names a task."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from shelfwise.configs.tasks import TaskDeclaration, load_task
from shelfwise.serving.schemas import FeedbackRequest
from shelfwise.serving.task_api import forecast_api, tabular_api
from tests.serving.conftest import generated_frame

ROOT = Path(__file__).resolve().parents[2]


def _task(tmp_path: Path, **over) -> TaskDeclaration:
    csv = tmp_path / "baskets.csv"
    generated_frame(20).to_csv(csv, index=False)
    raw = {
        "name": "basket_churn",
        "kind": "classification",
        "dataset": {
            "kind": "tabular",
            "name": "baskets",
            "path": str(csv),
            "target": "churned",
            "id_column": "customer",
            "categorical": ["channel", "region"],
            "numeric": ["visits", "spend"],
        },
        **over,
    }
    return TaskDeclaration.model_validate(raw)


GOOD = {"customer": "C1", "channel": "web", "region": "east", "visits": 3, "spend": 10.5}


def test_fields_types_and_example_come_from_the_spec(tmp_path: Path) -> None:
    api = tabular_api(_task(tmp_path, serving={"id_field": "customer"}))
    schema = api.request.model_json_schema()
    assert set(schema["properties"]) == {
        "customer",
        "channel",
        "region",
        "visits",
        "spend",
        "explain",
    }
    first = pd.read_csv(tmp_path / "baskets.csv").iloc[0]
    example = schema["example"]
    assert example["channel"] == first["channel"] and example["visits"] == float(first["visits"])
    assert example["customer"] == first["customer"] and example["explain"] is False
    request = api.request.model_validate(GOOD)
    assert api.row(request) == {"channel": "web", "region": "east", "visits": 3, "spend": 10.5}
    assert api.request_id(request) == "C1"
    # a data-set row goes back to the same request
    row = generated_frame(3).iloc[1].to_dict()
    again = api.request.model_validate(api.payload(row, "C9"))
    assert api.row(again)["spend"] == pytest.approx(row["spend"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"visits": "3"}, "visits"),
        ({"visits": True}, "visits"),
        ({"spend": float("inf")}, "spend"),
        ({"channel": 4}, "channel"),
        ({"coupon": "X"}, "coupon"),
        ({"explain": "yes"}, "explain"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, change: dict, field: str) -> None:
    api = tabular_api(_task(tmp_path, serving={"id_field": "customer"}))
    with pytest.raises(ValidationError) as err:
        api.request.model_validate({**GOOD, **change})
    assert [e["loc"][0] for e in err.value.errors()] == [field]


def test_missing_fields_and_nulls_follow_the_data_policy(tmp_path: Path) -> None:
    strict = tabular_api(_task(tmp_path, data={"missing": "error"}))
    body = {k: v for k, v in GOOD.items() if k != "customer"}
    with pytest.raises(ValidationError) as err:
        strict.request.model_validate({k: v for k, v in body.items() if k != "spend"})
    assert err.value.errors()[0]["loc"] == ("spend",)
    with pytest.raises(ValidationError) as err:
        strict.request.model_validate({**body, "spend": None})
    assert err.value.errors()[0]["loc"] == ("spend",)
    keep = tabular_api(_task(tmp_path))  # default: missing values kept
    assert keep.row(keep.request.model_validate({**body, "spend": None}))["spend"] is None


def test_renamed_fields_and_output_name(tmp_path: Path) -> None:
    task = _task(
        tmp_path,
        serving={"fields": {"visits": "n_visits"}, "output": "churn_p", "batch_field": "baskets"},
    )
    api = tabular_api(task)
    props = api.request.model_json_schema()["properties"]
    assert "n_visits" in props and "visits" not in props and "id" in props
    request = api.request.model_validate(
        {"id": 5, "channel": "web", "region": "east", "n_visits": 2, "spend": 1.0}
    )
    assert api.row(request)["visits"] == 2 and api.request_id(request) == "5"
    response = api.response(prediction_id="p", task=task.name, model_version="1", prediction=0.3)
    assert response.model_dump()["churn_p"] == 0.3
    assert api.batch_input.model_json_schema()["required"] == ["baskets"]


def test_shipped_tasks_build_and_keep_todays_request_names() -> None:
    delay = tabular_api(load_task(ROOT / "configs" / "tasks" / "delay_risk.yaml"))
    props = delay.request.model_json_schema()["properties"]
    assert {"order_id", "warehouse_block", "shipment_mode", "cost", "weight"} <= set(props)
    forecast = forecast_api(load_task(ROOT / "configs" / "tasks" / "demand_forecast.yaml"))
    assert set(forecast.example["series"]) == {"store", "item"}


def test_no_serving_code_names_a_task() -> None:
    names = [p.stem for p in (ROOT / "configs" / "tasks").glob("*.yaml")]
    pattern = re.compile(
        "|".join(rf"\b{re.escape(n)}\b|{re.escape(n.replace('_', '-'))}" for n in names)
    )
    for path in (ROOT / "serving").glob("*.py"):
        if path.name == "client.py":  # today's callers' routes (a task's legacy routes)
            continue
        hits = pattern.findall(path.read_text())
        assert not hits, f"{path.name} names tasks: {sorted(set(hits))}"


def test_feedback_needs_exactly_one_key() -> None:
    assert FeedbackRequest(prediction_id="p", actual=1).order_id is None
    with pytest.raises(ValidationError, match="exactly one"):
        FeedbackRequest(actual=1)
    with pytest.raises(ValidationError, match="exactly one"):
        FeedbackRequest(prediction_id="p", order_id="o", actual=1)
