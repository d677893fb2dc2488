"""A regression task on a generated file that no code names (its own columns and types)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def demand_csv(path: Path, n: int = 1500, seed: int = 3, missing_share: float = 0.05) -> Path:
    """Basket value of an order: linear + nonlinear terms + a category effect + noise, with
    missing values in one numeric column and a flag written TRUE/FALSE."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, 12, n).astype(float)
    distance = rng.uniform(0, 30, n)
    hour = rng.integers(6, 23, n).astype(float)
    channel = rng.choice(["app", "web", "store"], n)
    promo = rng.random(n) < 0.3
    y = (
        4.0 * items
        + 8.0 * np.sin(hour / 3.0)
        - 0.3 * distance
        + np.where(channel == "app", 6.0, 0.0)
        + np.where(promo, -5.0, 0.0)
        + rng.normal(0, 2.0, n)
    )
    df = pd.DataFrame(
        {
            "order": np.arange(n),
            "items": items,
            "distance_km": distance,
            "hour": hour,
            "channel": channel,
            "promo": np.where(promo, "TRUE", "FALSE"),
            "basket_value": y.round(2),
        }
    )
    df.loc[rng.random(n) < missing_share, "distance_km"] = np.nan
    df.to_csv(path, index=False)
    return path


def regression_task(tmp_path: Path, csv: Path, **keys) -> Path:
    name = f"basket_{uuid.uuid4().hex[:8]}"
    body = {
        "name": name,
        "kind": "regression",
        "dataset": {
            "kind": "tabular",
            "name": "baskets",
            "path": str(csv),
            "target": "basket_value",
            "id_column": "order",
            "categorical": ["channel"],
            "numeric": ["items", "distance_km", "hour", "promo"],
        },
        "candidates": ["ridge", "xgboost"],
        "training": {"split": {"cv_folds": 3}},
        **keys,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path
