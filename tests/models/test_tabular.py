import numpy as np
import pandas as pd
import pytest

from shelfwise.configs.datasets import TabularDatasetSpec, load_tabular_spec
from shelfwise.configs.tabular_training import SeverityBands, TabularTrainingConfig
from shelfwise.configs.tasks import load_task, training_config
from shelfwise.models.datasets import load_tabular, stratified_split
from shelfwise.models.metrics import (
    HIGHER_IS_BETTER,
    business_cost,
    classification_metrics,
    expected_calibration_error,
    regression_metrics,
)
from shelfwise.models.tabular import (
    build_pipeline,
    build_xgb_pipeline,
    cross_validate,
    cv_splitter,
    features_and_target,
    needs_imputation,
    predict,
    severities,
    severity,
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


def test_regression_metrics_on_known_values() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    exact = regression_metrics(y, y)
    assert exact == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}
    mean = regression_metrics(y, np.full(4, y.mean()))
    assert mean["r2"] == 0.0 and mean["rmse"] == pytest.approx(np.std(y))
    assert regression_metrics(y, y + 1.0)["mae"] == 1.0
    assert "r2" in HIGHER_IS_BETTER and "rmse" not in HIGHER_IS_BETTER


def test_missing_values_kept_for_xgboost_imputed_for_the_others() -> None:
    assert not needs_imputation("xgboost", "keep")
    assert needs_imputation("random_forest", "keep") and needs_imputation("logistic", "keep")
    assert needs_imputation("xgboost", "impute")
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"c": rng.choice(["a", "b"], 200), "x": rng.normal(size=200)})
    y = (X["x"] + (X["c"] == "a") > 0.5).astype(int).to_numpy()
    X.loc[::7, "x"] = np.nan
    spec = TabularDatasetSpec(name="t", path="t.csv", target="y", categorical=["c"], numeric=["x"])
    for family in ("logistic", "random_forest", "xgboost"):
        pipe = build_pipeline(family, spec, TabularTrainingConfig().params(family), 0).fit(X, y)
        proba = predict(pipe, X)
        assert np.isfinite(proba).all() and classification_metrics(y, proba)["roc_auc"] > 0.8
    with pytest.raises(ValueError, match="not a regression family"):
        build_pipeline("logistic", spec, TabularTrainingConfig().logistic, 0, "regression")


def test_every_family_gets_the_same_folds() -> None:
    X = pd.DataFrame({"x": np.arange(100.0)})
    y = np.r_[np.zeros(60), np.ones(40)].astype(int)
    a = [va.tolist() for _, va in cv_splitter("classification", 5, 42).split(X, y)]
    b = [va.tolist() for _, va in cv_splitter("classification", 5, 42).split(X, y)]
    assert a == b
    assert all(sum(y[v]) == 8 for v in a)  # stratified
    r = [va.tolist() for _, va in cv_splitter("regression", 5, 42).split(X, y.astype(float))]
    assert sorted(i for v in r for i in v) == list(range(100))


@pytest.mark.slow
def test_xgboost_beats_logistic_baseline_on_real_holdout(data_dir) -> None:
    cfg = training_config(load_task("delay_risk"))
    spec = load_tabular_spec(cfg.dataset)
    df, _ = load_tabular(spec, data_dir)
    train, test = stratified_split(df, spec.target, cfg.split.test_size, cfg.split.seed)
    X, y = features_and_target(train, spec)
    Xt, yt = features_and_target(test, spec)
    xgb = build_xgb_pipeline(spec, cfg.xgboost).fit(X, y)
    base = build_pipeline("logistic", spec, cfg.logistic).fit(X, y)
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
    cfg = training_config(load_task("delay_risk"))
    spec = load_tabular_spec(cfg.dataset)
    df, _ = load_tabular(spec, data_dir)
    X, y = features_and_target(df, spec)
    seen: list[int] = []
    res = cross_validate(
        lambda: build_xgb_pipeline(spec, cfg.xgboost),
        X,
        y,
        5,
        42,
        on_fold=lambda i, _: seen.append(i),
    )
    assert seen == [0, 1, 2, 3, 4]
    assert 0.72 <= res.mean <= 0.78 and res.std < 0.03
    summary = res.summary()
    assert summary["cv_roc_auc_mean"] == pytest.approx(res.mean)
    assert {"cv_brier_mean", "cv_ece_mean", "cv_log_loss_std"} <= set(summary)
