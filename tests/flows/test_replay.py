"""The scenario's traffic (flows/replay.py) and the service client's order mapping."""

from __future__ import annotations

import pandas as pd
import pytest

from shelfwise.configs.datasets import load_tabular_spec
from shelfwise.configs.tasks import load_task, load_tasks, training_config
from shelfwise.flows.replay import ScenarioError, shift_traffic
from shelfwise.models.datasets import load_tabular, stratified_split
from shelfwise.serving.client import FEEDBACK_ROUTE, VERSIONS_ROUTE, route, row_payload

LOW = "Discount_offered <= 10"


@pytest.fixture(scope="module")
def shipping(data_dir):
    spec = load_tabular_spec("ecommerce_shipping")
    data, _ = load_tabular(spec, data_dir)
    cfg = training_config(load_task("delay_risk")).model_copy(update={"row_filter": LOW})
    return spec, data, cfg


def test_quiet_traffic_is_the_segment_the_model_never_trained_on(shipping) -> None:
    spec, data, cfg = shipping
    traffic = shift_traffic(data, spec, cfg, 1000, 1000, 0.67, seed=5)
    train, _ = stratified_split(
        data.query(LOW).reset_index(drop=True), spec.target, cfg.split.test_size, cfg.split.seed
    )
    trained_ids = set(train[spec.id_column])
    in_segment = pd.concat([traffic.quiet, traffic.shifted.query(LOW)])
    assert len(traffic.quiet) == 1000 and traffic.quiet.eval(LOW).all()
    assert not trained_ids & set(in_segment[spec.id_column])
    assert in_segment[spec.id_column].is_unique  # quiet and shifted never repeat an order
    assert len(traffic.shifted) == 1000
    assert (~traffic.shifted.eval(LOW)).sum() == 670 and traffic.shifted_share == 0.67
    # a different seed replays other orders (a second demo run)
    other = shift_traffic(data, spec, cfg, 1000, 1000, 0.67, seed=6)
    assert set(other.quiet[spec.id_column]) != set(traffic.quiet[spec.id_column])


def test_scenario_errors_name_what_is_missing(shipping) -> None:
    spec, data, cfg = shipping
    with pytest.raises(ScenarioError, match="no row_filter"):
        shift_traffic(data, spec, cfg.model_copy(update={"row_filter": None}), 10, 10, 0.5)
    with pytest.raises(ScenarioError, match="held-out rows"):
        shift_traffic(data, spec, cfg, 5000, 1000, 0.5)


def test_order_payload_round_trips_through_the_strict_schema(shipping) -> None:
    from shelfwise.serving.client import _task_api

    spec, data, _ = shipping
    task = load_task("delay_risk")
    api = _task_api(task)  # the task's generated request model
    for row in data.sample(50, random_state=1).to_dict("records"):
        order = api.request.model_validate(row_payload(task, row, f"o-{row[spec.id_column]}"))
        assert api.row(order) == {c: row[c] for c in spec.features}


def test_client_routes_are_the_service_routes() -> None:
    from shelfwise.serving import service

    for task in load_tasks():  # the client calls each declared task's own routes
        kinds = ("forecast",) if task.kind.value == "forecast" else ("batch",)
        for kind in kinds:
            assert route(task, kind) in service.PREDICTION_ROUTES, (task.name, kind)
    assert route(load_task("delay_risk"), "batch") == "/v1/delay-risk/batch"
    assert FEEDBACK_ROUTE == service.FEEDBACK_ROUTE
    assert VERSIONS_ROUTE == service.VERSIONS_ROUTE
