"""The champion and the challenger on the same labelled live requests, as one Evidently report:
the challenger's predictions are the current data, the champion's the reference, so every
metric of the kind's preset is shown side by side on identical rows (registry/online.py pairs
them; flows/online.py logs the report)."""

from __future__ import annotations

import pandas as pd
from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
from evidently.core.report import Snapshot
from evidently.presets import ClassificationPreset, RegressionPreset


def paired_report(pairs: pd.DataFrame, kind: str) -> Snapshot:
    """``pairs`` has ``y``, ``champion``, ``challenger`` (one row per paired request)."""

    def side(column: str) -> pd.DataFrame:
        target = pairs["y"].astype(int if kind == "classification" else float)
        return pd.DataFrame(
            {"target": target.to_numpy(), "prediction": pairs[column].astype(float).to_numpy()}
        )

    if kind == "classification":
        definition = DataDefinition(
            numerical_columns=["prediction"],
            classification=[
                BinaryClassification(target="target", prediction_probas="prediction", pos_label=1)
            ],
        )
        preset = ClassificationPreset()
    else:
        definition = DataDefinition(
            numerical_columns=["target", "prediction"],
            regression=[Regression(target="target", prediction="prediction")],
        )
        preset = RegressionPreset()
    return Report([preset]).run(
        current_data=Dataset.from_pandas(side("challenger"), data_definition=definition),
        reference_data=Dataset.from_pandas(side("champion"), data_definition=definition),
    )
