"""Feature contributions of one prediction of a tabular pipeline (``explain: true``).

The pipeline is ``Pipeline([encoder (ColumnTransformer), model])``. Each method decomposes the
model's raw output for a row into ``base + sum(contributions)`` over the *encoded* columns; the
encoded columns are then mapped back onto the request's features (a one-hot block sums into its
categorical column), so the contributions still add up to the same total.

- XGBoost (``get_booster``): native TreeSHAP, ``Booster.predict(pred_contribs=True)``; base =
  the bias column; units: the margin (log-odds for a classifier).
- linear models (``coef_``: logistic, ridge): coefficient x encoded value (numeric columns
  standardized by the pipeline's scaler, one-hot columns 0/1); base = the intercept; units: the
  margin (log-odds for logistic).
- scikit-learn trees and forests (``tree_`` / ``estimators_``): decision-path attribution
  (Saabas; the "treeinterpreter" method): along each tree's path, the change of the node value
  is credited to the node's split feature; base = the root value; averaged over the trees;
  units: the positive class's probability (classifier) or the prediction.

Anything else has no explanation (``method: none``). The computation runs only for a request
that asks for it: predictions without ``explain`` never touch this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shelfwise.models.fast_tabular import transformer_columns


@dataclass(frozen=True)
class Explanation:
    method: str
    units: str
    base_value: float
    contributions: dict[str, float]  # input column -> contribution (all columns)

    def top(self, k: int) -> list[tuple[str, float]]:
        items = sorted(self.contributions.items(), key=lambda kv: abs(kv[1]), reverse=True)
        return items[:k]


def encoded_owners(encoder: Any) -> list[str]:
    """For each output column of a fitted ColumnTransformer, the input column it comes from."""
    from sklearn.preprocessing import OneHotEncoder

    all_columns = [str(c) for c in getattr(encoder, "feature_names_in_", [])]
    width = sum(sl.stop - sl.start for sl in encoder.output_indices_.values())
    owners: list[str | None] = [None] * width
    for name, transformer, cols in encoder.transformers_:
        sl = encoder.output_indices_.get(name)
        if sl is None or sl.stop == sl.start or transformer == "drop":
            continue
        columns = transformer_columns(cols, all_columns)
        n = sl.stop - sl.start
        if isinstance(transformer, OneHotEncoder):
            pos = sl.start
            for i, (col, cats) in enumerate(zip(columns, transformer.categories_, strict=True)):
                k = len(cats)
                drop = getattr(transformer, "drop_idx_", None)
                if drop is not None and drop[i] is not None:
                    k -= 1
                for j in range(pos, pos + k):
                    owners[j] = col
                pos += k
        elif n == len(columns):
            for offset, col in enumerate(columns):
                owners[sl.start + offset] = col
        else:  # a transformer that changes the width: credit by output-name prefix
            names = list(encoder.get_feature_names_out())[sl]
            for offset, out in enumerate(names):
                owners[sl.start + offset] = next(
                    (c for c in columns if str(out).startswith(c)), columns[0]
                )
    return [o if o is not None else "?" for o in owners]


def _sum_by_owner(values: np.ndarray, owners: list[str], columns: list[str]) -> dict[str, float]:
    out = dict.fromkeys(columns, 0.0)
    for value, owner in zip(values, owners, strict=True):
        out[owner] = out.get(owner, 0.0) + float(value)
    return out


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def explain_row(pipeline: Any, frame: pd.DataFrame, kind: str) -> Explanation:
    """Contributions of the first row of ``frame`` (the pipeline's input columns)."""
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) < 2:
        return Explanation("none", "", 0.0, {})
    encoder, model = pipeline[:-1], steps[-1][1]
    x = _dense(encoder.transform(frame.head(1)))
    last = steps[-2][1]
    owners = (
        encoded_owners(last)
        if hasattr(last, "output_indices_")
        else [str(c) for c in frame.columns][: x.shape[1]]
    )
    columns = [str(c) for c in frame.columns]
    classifier = kind == "classification"
    if hasattr(model, "get_booster"):
        import xgboost as xgb

        booster = model.get_booster()
        best = getattr(model, "best_iteration", None)
        iteration_range = (0, int(best) + 1) if best is not None else (0, 0)
        contribs = booster.predict(
            xgb.DMatrix(x), pred_contribs=True, iteration_range=iteration_range
        )
        contribs = np.asarray(contribs, dtype=np.float64).reshape(1, -1)
        return Explanation(
            "xgboost_treeshap",
            "log-odds" if classifier else "prediction",
            float(contribs[0, -1]),
            _sum_by_owner(contribs[0, :-1], owners, columns),
        )
    if hasattr(model, "coef_"):
        coef = np.asarray(model.coef_, dtype=np.float64).reshape(-1, x.shape[1])[-1]
        intercept = float(np.asarray(getattr(model, "intercept_", 0.0)).reshape(-1)[-1])
        return Explanation(
            "linear_coefficient_x_value",
            "log-odds" if classifier else "prediction",
            intercept,
            _sum_by_owner(coef * x[0], owners, columns),
        )
    trees = getattr(model, "estimators_", None)
    if trees is None and hasattr(model, "tree_"):
        trees = [model]
    if trees is not None and all(hasattr(t, "tree_") for t in np.ravel(trees)):
        base, contrib = _path_attribution(list(np.ravel(trees)), x, classifier)
        return Explanation(
            "tree_path_attribution",
            "probability" if classifier else "prediction",
            base,
            _sum_by_owner(contrib, owners, columns),
        )
    return Explanation("none", "", 0.0, {})


def _node_values(tree: Any, classifier: bool) -> np.ndarray:
    value = np.asarray(tree.tree_.value, dtype=np.float64)
    if classifier:
        fractions = value[:, 0, :] / np.maximum(value[:, 0, :].sum(axis=1, keepdims=True), 1e-300)
        return fractions[:, -1]  # the positive class
    return value[:, 0, 0]


def _path_attribution(
    trees: list[Any], x: np.ndarray, classifier: bool
) -> tuple[float, np.ndarray]:
    contrib = np.zeros(x.shape[1])
    base = 0.0
    for tree in trees:
        values = _node_values(tree, classifier)
        t = tree.tree_
        node = 0
        base += values[0]
        while t.children_left[node] != -1:
            feature = t.feature[node]
            child = (
                t.children_left[node]
                if x[0, feature] <= t.threshold[node]
                else t.children_right[node]
            )
            contrib[feature] += values[child] - values[node]
            node = child
    n = max(len(trees), 1)
    return base / n, contrib / n
