import numpy as np
import pytest

from shelfwise.configs.datasets import load_tabular_spec
from shelfwise.configs.delay import SeverityBands, load_delay_config
from shelfwise.models.datasets import load_tabular, stratified_split
from shelfwise.models.delay import (
    build_baseline_pipeline,
    build_xgb_pipeline,
    cross_validate_auc,
    features_and_target,
    severities,
    severity,
)
from shelfwise.models.metrics import (
    business_cost,
    classification_metrics,
    expected_calibration_error,
)


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.95, "critical"),
        (0.7001, "critical"),
        (0.7, "warning"),
        (0.51, "warning"),
        (0.5, "info"),
        (0.31, "info"),
        (0.3, "none"),
        (0.0, "none"),
    ],
)
def test_severity_bands_are_strictly_greater(p: float, expected: str) -> None:
    assert severity(p, SeverityBands()) == expected


def test_severity_bands_from_config() -> None:
    bands = SeverityBands(critical=0.9, warning=0.8, info=0.1)
    assert severities(np.array([0.85, 0.95, 0.05]), bands) == ["warning", "critical", "none"]


def test_metrics_on_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    perfect = classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect["roc_auc"] == 1.0 and perfect["accuracy"] == 1.0
    inverted = classification_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]))
    assert inverted["roc_auc"] == 0.0 and inverted["brier"] > perfect["brier"]
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0])) == 0.0
    # one missed late delivery (cost 10) + one false alarm (cost 1) over 4 orders
    assert business_cost(y, np.array([0.9, 0.1, 0.2, 0.9]), 0.5, 10.0, 1.0) == 11 / 4


@pytest.mark.slow
def test_xgboost_beats_logistic_baseline_on_real_holdout(data_dir) -> None:
    cfg = load_delay_config()
    spec = load_tabular_spec(cfg.dataset)
    df, _ = load_tabular(spec, data_dir)
    train, test = stratified_split(df, spec.target, cfg.split.test_size, cfg.split.seed)
    X, y = features_and_target(train, spec)
    Xt, yt = features_and_target(test, spec)
    xgb = build_xgb_pipeline(spec, cfg.xgboost).fit(X, y)
    base = build_baseline_pipeline(spec, cfg.baseline).fit(X, y)
    xgb_auc = classification_metrics(yt, xgb.predict_proba(Xt)[:, 1])["roc_auc"]
    base_auc = classification_metrics(yt, base.predict_proba(Xt)[:, 1])["roc_auc"]
    assert xgb_auc >= 0.73, xgb_auc
    assert xgb_auc >= base_auc, (xgb_auc, base_auc)
    # unknown categories at prediction time are ignored, not an error
    odd = Xt.head(3).copy()
    odd["Warehouse_block"] = "Z"
    assert xgb.predict_proba(odd).shape == (3, 2)


@pytest.mark.slow
def test_cross_validation_is_stable(data_dir) -> None:
    cfg = load_delay_config()
    spec = load_tabular_spec(cfg.dataset)
    df, _ = load_tabular(spec, data_dir)
    X, y = features_and_target(df, spec)
    seen: list[int] = []
    res = cross_validate_auc(
        lambda: build_xgb_pipeline(spec, cfg.xgboost),
        X,
        y,
        5,
        42,
        on_fold=lambda i, _: seen.append(i),
    )
    assert seen == [0, 1, 2, 3, 4]
    assert 0.72 <= res.mean <= 0.78 and res.std < 0.03
