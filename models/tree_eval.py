"""XGBoost's binary-logistic trees evaluated with a few numpy gathers, for one order at a time.

``Booster.inplace_predict`` costs ~0.1 ms of Python and C-API overhead per call, which for a
single request is more than the 200 small trees themselves. ``CompiledTrees`` reads the trees
from the booster's JSON once and walks all of them level by level at once: the same float32
comparisons (``x < split`` goes left) and float32 leaf sums as XGBoost's CPU predictor, so the
probabilities agree to float32 rounding (checked against the pipeline at load time).
Numerical splits only, no missing values (the service validates every field).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np


class UnsupportedBooster(ValueError):
    """The booster uses something the compiled trees do not reproduce (named)."""


def _base_score(learner: dict[str, Any]) -> float:
    raw = str(learner["learner_model_param"]["base_score"]).strip("[]").split(",")[0]
    return float(raw)


@dataclass(frozen=True)
class CompiledTrees:
    feature: np.ndarray  # (trees * width,) int32 split feature per node (0 at leaves)
    threshold: np.ndarray  # float32 split value per node
    left: np.ndarray  # int64 flat index of the left child (leaves point to themselves)
    right: np.ndarray  # int64 flat index of the right child
    value: np.ndarray  # float32 leaf value per node (0 for inner nodes)
    roots: np.ndarray  # int64 flat index of each tree's root
    depth: int
    base_margin: np.float32

    def margin(self, x: np.ndarray) -> np.ndarray:
        x32 = np.asarray(x, dtype=np.float32)
        n = len(x32)
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        offsets = (np.arange(n, dtype=np.int64) * x32.shape[1])[:, None]
        flat_x = x32.ravel()
        for _ in range(self.depth):
            go_left = flat_x[offsets + self.feature[node]] < self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return self.value[node].sum(axis=1, dtype=np.float32) + self.base_margin

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        m = self.margin(x)
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-m))).astype(np.float64)


def compile_booster(booster: Any, n_trees: int | None = None) -> CompiledTrees:
    """``n_trees``: use the first trees only (an early-stopped model's iteration range)."""
    model = json.loads(booster.save_raw(raw_format="json"))
    learner = model["learner"]
    objective = learner["objective"]["name"]
    if objective != "binary:logistic":
        raise UnsupportedBooster(f"objective {objective!r}; only binary:logistic is compiled")
    gbm = learner["gradient_booster"]
    if gbm.get("name") != "gbtree":
        raise UnsupportedBooster(f"booster {gbm.get('name')!r}; only gbtree is compiled")
    trees = gbm["model"]["trees"][: n_trees or None]
    if not trees:
        raise UnsupportedBooster("the booster has no trees")
    width = max(len(t["left_children"]) for t in trees)
    total = width * len(trees)
    feature = np.zeros(total, dtype=np.int64)
    threshold = np.zeros(total, dtype=np.float32)
    left = np.arange(total, dtype=np.int64)
    right = np.arange(total, dtype=np.int64)
    value = np.zeros(total, dtype=np.float32)
    depth = 0
    for i, tree in enumerate(trees):
        if any(int(s) != 0 for s in tree.get("split_type", [])):
            raise UnsupportedBooster(f"tree {i} has categorical splits")
        base = i * width
        lc, rc = tree["left_children"], tree["right_children"]
        for j, (lj, rj) in enumerate(zip(lc, rc, strict=True)):
            if lj == -1:
                value[base + j] = np.float32(tree["split_conditions"][j])
            else:
                feature[base + j] = int(tree["split_indices"][j])
                threshold[base + j] = np.float32(tree["split_conditions"][j])
                left[base + j], right[base + j] = base + lj, base + rj
        depth = max(depth, _depth(lc, rc))
    p = np.float32(_base_score(learner))
    return CompiledTrees(
        feature=feature,
        threshold=threshold,
        left=left,
        right=right,
        value=value,
        roots=np.arange(len(trees), dtype=np.int64) * width,
        depth=depth,
        base_margin=np.float32(np.log(p / (np.float32(1.0) - p))),
    )


def _depth(left: list[int], right: list[int]) -> int:
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, d = stack.pop()
        if left[node] == -1:
            deepest = max(deepest, d)
        else:
            stack += [(left[node], d + 1), (right[node], d + 1)]
    return deepest
