"""Request schema: maps onto the dataset spec's columns, rejects bad input naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shelfwise.configs.datasets import load_tabular_spec
from shelfwise.serving.schemas import (
    EXAMPLE_ORDER,
    GENDERS,
    ORDER_TO_COLUMN,
    PRODUCT_IMPORTANCE,
    SHIPMENT_MODES,
    WAREHOUSE_BLOCKS,
    DelayOrder,
    FeedbackRequest,
)

ORDER = {**EXAMPLE_ORDER, "order_id": "SO-1", "cost": 214, "weight": 1800.5}


def test_mapping_covers_exactly_the_dataset_spec_features(shipping_frame) -> None:
    df, _ = shipping_frame
    spec = load_tabular_spec("ecommerce_shipping")
    assert sorted(ORDER_TO_COLUMN.values()) == sorted(spec.features)
    # the schema's categories are exactly the ones in the real data
    for values, column in [
        (WAREHOUSE_BLOCKS, "Warehouse_block"),
        (SHIPMENT_MODES, "Mode_of_Shipment"),
        (PRODUCT_IMPORTANCE, "Product_importance"),
        (GENDERS, "Gender"),
    ]:
        assert set(values) == set(df[column].unique())


def test_model_row_and_logged_inputs_keep_extras() -> None:
    order = DelayOrder.model_validate({**ORDER, "gift_wrap": True})
    row = order.model_row()
    assert row["Weight_in_gms"] == 1800.5 and row["Mode_of_Shipment"] == "Ship"
    assert list(row) == list(ORDER_TO_COLUMN.values())
    logged = order.logged_inputs()
    assert logged["carrier"] == "DHL" and logged["gift_wrap"] is True
    assert "gift_wrap" not in row and "carrier" not in row


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"weight": -5.0}, "weight"),
        ({"warehouse_block": "E"}, "warehouse_block"),
        ({"shipment_mode": "Rail"}, "shipment_mode"),
        ({"product_importance": "urgent"}, "product_importance"),
        ({"gender": "X"}, "gender"),
        ({"customer_rating": "3"}, "customer_rating"),
        ({"customer_rating": 9}, "customer_rating"),
        ({"cost": "cheap"}, "cost"),
        ({"customer_care_calls": True}, "customer_care_calls"),
        ({"order_id": ""}, "order_id"),
        ({"discount": float("inf")}, "discount"),
    ],
)
def test_bad_fields_are_named(change: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        DelayOrder.model_validate({**ORDER, **change})
    assert [e["loc"][0] for e in err.value.errors()] == [field]


def test_missing_field_is_named() -> None:
    body = {k: v for k, v in ORDER.items() if k != "weight"}
    with pytest.raises(ValidationError) as err:
        DelayOrder.model_validate(body)
    assert err.value.errors()[0]["loc"] == ("weight",)


def test_feedback_needs_exactly_one_key() -> None:
    assert FeedbackRequest(prediction_id="p", actual=1).order_id is None
    with pytest.raises(ValidationError, match="exactly one"):
        FeedbackRequest(actual=1)
    with pytest.raises(ValidationError, match="exactly one"):
        FeedbackRequest(prediction_id="p", order_id="o", actual=1)
