"""Compiled trees give XGBoost's own probabilities (to float32 rounding) on the real data."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from shelfwise.configs.datasets import load_tabular_spec
from shelfwise.models.datasets import load_tabular
from shelfwise.models.tree_eval import UnsupportedBooster, compile_booster


@pytest.fixture(scope="module")
def shipping_xy(data_dir):
    spec = load_tabular_spec("ecommerce_shipping")
    df, _ = load_tabular(spec, data_dir)
    X = df[spec.numeric].to_numpy(dtype=np.float64)
    return X, df[spec.target].to_numpy()


@pytest.mark.parametrize("depth", [1, 3, 8])
def test_compiled_trees_equal_the_booster(shipping_xy, depth) -> None:
    X, y = shipping_xy
    model = xgb.XGBClassifier(n_estimators=150, max_depth=depth, learning_rate=0.1, n_jobs=1)
    model.fit(X[:8000], y[:8000])
    trees = compile_booster(model.get_booster())
    expected = model.predict_proba(X[8000:])[:, 1]
    np.testing.assert_allclose(trees.predict_proba(X[8000:]), expected, rtol=0, atol=1e-6)
    one = trees.predict_proba(X[8000:8001])  # the per-request shape
    np.testing.assert_allclose(one, expected[:1], rtol=0, atol=1e-6)
    assert trees.depth <= depth and 0.0 < expected.min() < expected.max() < 1.0


def test_early_stopped_model_uses_its_best_iteration(shipping_xy) -> None:
    X, y = shipping_xy
    model = xgb.XGBClassifier(
        n_estimators=400, max_depth=4, learning_rate=0.3, early_stopping_rounds=5, n_jobs=1
    )
    model.fit(X[:7000], y[:7000], eval_set=[(X[7000:9000], y[7000:9000])], verbose=False)
    assert model.best_iteration < 399
    trees = compile_booster(model.get_booster(), model.best_iteration + 1)
    expected = model.predict_proba(X[9000:])[:, 1]  # sklearn uses the best iteration
    np.testing.assert_allclose(trees.predict_proba(X[9000:]), expected, rtol=0, atol=1e-6)


def test_other_objectives_are_refused(shipping_xy) -> None:
    X, y = shipping_xy
    reg = xgb.XGBRegressor(n_estimators=5, n_jobs=1).fit(X[:500], y[:500])
    with pytest.raises(UnsupportedBooster, match="binary:logistic"):
        compile_booster(reg.get_booster())
