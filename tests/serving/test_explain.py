"""Feature contributions (serving/explain.py) add up to what each family's model outputs, and
one-hot columns are summed back onto their categorical feature."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from shelfwise.serving.explain import explain_row
from tests.serving.conftest import generated_frame

CATEGORICAL = ["channel", "region"]
NUMERIC = ["visits", "spend", "tenure_days"]
FEATURES = [*CATEGORICAL, *NUMERIC]


def _pipe(model, scale: bool = False) -> Pipeline:
    encode = ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                CATEGORICAL,
            ),
            ("numeric", StandardScaler() if scale else "passthrough", NUMERIC),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([("encode", encode), ("model", model)])


@pytest.fixture(scope="module")
def frame():
    return generated_frame(300)


def _total(e) -> float:
    return e.base_value + sum(e.contributions.values())


def test_xgboost_treeshap_adds_up_to_the_margin(frame) -> None:
    pipe = _pipe(XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1)).fit(
        frame[FEATURES], frame["churned"]
    )
    row = frame[FEATURES].iloc[[3]]
    e = explain_row(pipe, row, "classification")
    assert e.method == "xgboost_treeshap" and set(e.contributions) == set(FEATURES)
    p = pipe.predict_proba(row)[0, 1]
    assert _total(e) == pytest.approx(np.log(p / (1 - p)), abs=1e-4)
    reg = _pipe(XGBRegressor(n_estimators=20, max_depth=3, n_jobs=1)).fit(
        frame[FEATURES], frame["basket_value"]
    )
    e = explain_row(reg, row, "regression")
    assert _total(e) == pytest.approx(reg.predict(row)[0], rel=1e-4)


def test_logistic_coefficients_add_up_to_the_log_odds(frame) -> None:
    pipe = _pipe(LogisticRegression(max_iter=500), scale=True).fit(
        frame[FEATURES], frame["churned"]
    )
    row = frame[FEATURES].iloc[[5]]
    e = explain_row(pipe, row, "classification")
    assert e.method == "linear_coefficient_x_value"
    assert _total(e) == pytest.approx(pipe.decision_function(row)[0], rel=1e-9)


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_forest_path_attribution_adds_up_to_the_prediction(frame, kind: str) -> None:
    if kind == "classification":
        model, target = (
            RandomForestClassifier(n_estimators=15, max_depth=4, random_state=0),
            "churned",
        )
    else:
        model, target = (
            RandomForestRegressor(n_estimators=15, max_depth=4, random_state=0),
            "basket_value",
        )
    pipe = _pipe(model).fit(frame[FEATURES], frame[target])
    row = frame[FEATURES].iloc[[7]]
    e = explain_row(pipe, row, kind)
    assert e.method == "tree_path_attribution"
    expected = pipe.predict_proba(row)[0, 1] if kind == "classification" else pipe.predict(row)[0]
    assert _total(e) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert e.top(2)[0][1] == max(e.contributions.values(), key=abs)
