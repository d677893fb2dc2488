from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from shelfwise.monitoring.kpis import fulfilment_kpis

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def test_kpis_over_rolling_window() -> None:
    frame = pd.DataFrame(
        {
            "created_at": [NOW - timedelta(days=d) for d in (1, 2, 3, 40)],
            "Warehouse_block": ["A", "A", "B", "B"],
            "Mode_of_Shipment": ["Ship", "Road", "Ship", "Ship"],
            "Product_importance": ["low", "low", "high", "high"],
            "delay_probability": [0.9, 0.5, 0.2, 0.99],
            "actual": [1.0, 0.0, np.nan, 1.0],
        }
    )
    k = fulfilment_kpis(
        frame, NOW, 30, 0.7, ["Warehouse_block", "Mode_of_Shipment", "Product_importance"]
    )
    assert k.orders == 3  # the 40-day-old order is outside the window
    assert k.high_risk_orders == 1
    assert k.labelled_orders == 2 and k.on_time_rate == 0.5
    assert k.segment_risk["Warehouse_block"] == {"A": 0.7, "B": 0.2}
    assert abs(k.mean_delay_probability - (0.9 + 0.5 + 0.2) / 3) < 1e-12


def test_kpis_on_empty_log() -> None:
    empty = pd.DataFrame(columns=["created_at", "delay_probability", "actual"])
    k = fulfilment_kpis(empty, NOW, 30, 0.7, ["Warehouse_block"])
    assert k.orders == 0 and k.on_time_rate is None and k.mean_delay_probability is None


def test_feedback_training_rows_map_actuals_to_the_target() -> None:
    from shelfwise.configs.datasets import load_tabular_spec
    from shelfwise.flows.monitor import feedback_training_rows

    spec = load_tabular_spec("ecommerce_shipping")
    row = {c: ("A" if c in spec.categorical else 1.0) for c in spec.features}
    frame = pd.DataFrame(
        [
            {**row, "prediction_id": "p1", "order_id": "o1", "actual": 1.0},
            {**row, "prediction_id": "p2", "order_id": None, "actual": np.nan},
            {**row, "prediction_id": "p3", "order_id": None, "actual": 0.0},
        ]
    )
    out = feedback_training_rows(frame, spec)
    assert list(out[spec.target]) == [1, 0]  # unlabelled rows are not training rows
    assert list(out[spec.id_column]) == ["o1", "p3"]
    assert list(out.columns) == [spec.id_column, *spec.features, spec.target]
