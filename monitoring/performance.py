"""Model performance on feedback-labelled production rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
from evidently import BinaryClassification, DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.presets import ClassificationPreset

from shelfwise.models.metrics import classification_metrics


def labelled(frame: pd.DataFrame, actual_column: str = "actual") -> pd.DataFrame:
    """Rows whose ground truth has arrived."""
    if actual_column not in frame:
        return frame.iloc[0:0]
    return frame[frame[actual_column].notna()]


def classification_performance(
    rows: pd.DataFrame, prediction_column: str, actual_column: str = "actual"
) -> dict[str, float] | None:
    """Classification metrics on labelled rows; None when both classes are not present."""
    if rows.empty:
        return None
    y = rows[actual_column].to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        return None
    metrics = classification_metrics(y, rows[prediction_column].to_numpy(dtype=float))
    metrics["labelled_rows"] = float(len(rows))
    metrics["late_rate"] = float(y.mean())
    return metrics


def regression_performance(
    rows: pd.DataFrame, prediction_column: str, actual_column: str = "actual"
) -> dict[str, float] | None:
    """RMSE, MAE and R² on labelled rows; None without at least two of them."""
    from shelfwise.models.metrics import regression_metrics

    if len(rows) < 2:
        return None
    y = rows[actual_column].to_numpy(dtype=float)
    metrics = regression_metrics(y, rows[prediction_column].to_numpy(dtype=float))
    metrics["labelled_rows"] = float(len(rows))
    return metrics


def regression_report(
    rows: pd.DataFrame, prediction_column: str, actual_column: str = "actual"
) -> Snapshot:
    """Evidently regression report (prediction vs actual) on labelled rows."""
    frame = rows.rename(columns={actual_column: "y", prediction_column: "yhat"})
    return forecast_report(frame)


def task_performance(
    kind: str, rows: pd.DataFrame, prediction_column: str
) -> tuple[dict[str, float] | None, Snapshot | None]:
    """The kind's metrics on labelled production rows and the matching Evidently report."""
    score, report = (
        (regression_performance, regression_report)
        if kind == "regression"
        else (classification_performance, performance_report)
    )
    metrics = score(rows, prediction_column)
    return metrics, (report(rows, prediction_column) if metrics else None)


def performance_report(
    rows: pd.DataFrame, prediction_column: str, actual_column: str = "actual"
) -> Snapshot:
    """Evidently classification report (HTML-able) on labelled rows."""
    data = pd.DataFrame(
        {
            "target": rows[actual_column].astype(int).to_numpy(),
            "prediction": rows[prediction_column].astype(float).to_numpy(),
        }
    )
    definition = DataDefinition(
        numerical_columns=["prediction"],
        classification=[
            BinaryClassification(target="target", prediction_probas="prediction", pos_label=1)
        ],
    )
    return Report([ClassificationPreset()]).run(
        current_data=Dataset.from_pandas(data, data_definition=definition), reference_data=None
    )


# --- forecasts against realised actuals ---------------------------------------------------------


def forecast_performance(rows: pd.DataFrame) -> dict[str, float] | None:
    """SMAPE (%), MAE and RMSE of ``yhat`` against ``y`` on scored rows; None when empty."""
    from shelfwise.models.forecast_metrics import mae, rmse, smape

    if rows.empty:
        return None
    y, yhat = rows["y"].to_numpy(dtype=float), rows["yhat"].to_numpy(dtype=float)
    return {
        "smape": smape(y, yhat),
        "mae": mae(y, yhat),
        "rmse": rmse(y, yhat),
        "scored_rows": float(len(rows)),
        "series": float(rows["sid"].nunique()) if "sid" in rows else float("nan"),
    }


def forecast_report(rows: pd.DataFrame) -> Snapshot:
    """Evidently regression report (forecast vs actual) on scored rows."""
    from evidently import Regression

    data = pd.DataFrame(
        {"target": rows["y"].astype(float).to_numpy(), "prediction": rows["yhat"].to_numpy()}
    )
    definition = DataDefinition(
        numerical_columns=["target", "prediction"],
        regression=[Regression(target="target", prediction="prediction")],
    )
    from evidently.presets import RegressionPreset

    return Report([RegressionPreset()]).run(
        current_data=Dataset.from_pandas(data, data_definition=definition), reference_data=None
    )
