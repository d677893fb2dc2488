"""Drift tests on the real shipping data: a real shift is caught, identical windows are not."""

import pandas as pd
import pytest

from shelfwise.configs.datasets import load_tabular_spec
from shelfwise.configs.monitoring import DriftConfig, RetrainPolicy
from shelfwise.models.datasets import load_tabular
from shelfwise.monitoring.drift import drift_report


@pytest.fixture(scope="module")
def shipping(data_dir):
    spec = load_tabular_spec("ecommerce_shipping")
    df, _ = load_tabular(spec, data_dir)
    return spec, df.sample(frac=1.0, random_state=0).reset_index(drop=True)


def test_identically_distributed_windows_do_not_drift(shipping) -> None:
    spec, df = shipping
    low = df[df["Discount_offered"] <= 10].reset_index(drop=True)
    reference = low.iloc[:2000]
    policy_share = RetrainPolicy().drift_share
    # 1,000-row windows (the configured window): no column may be flagged. Evidently's
    # size-dependent default (p-value tests) flagged ~2 of 10 columns per window here.
    for start in (2000, 3000, 4000):
        _, summary = drift_report(
            reference, low.iloc[start : start + 1000], spec.numeric, spec.categorical, DriftConfig()
        )
        assert summary.drifted_columns == [], (start, summary.scores)
    # 500-row windows are noisier (single columns can cross 0.1) but never reach the policy's share
    for start in range(5000, 8000, 500):
        _, summary = drift_report(
            reference, low.iloc[start : start + 500], spec.numeric, spec.categorical, DriftConfig()
        )
        assert summary.share < policy_share, (start, summary.scores)


def test_high_discount_segment_drifts(shipping) -> None:
    spec, df = shipping
    low = df[df["Discount_offered"] <= 10].reset_index(drop=True)
    high = df[df["Discount_offered"] > 10]
    current = pd.concat([low.iloc[2000:2500], high.iloc[:500]])
    _, summary = drift_report(
        low.iloc[:2000], current, spec.numeric, spec.categorical, DriftConfig()
    )
    assert "Discount_offered" in summary.drifted_columns
    assert summary.share >= 0.3
    assert summary.scores["Discount_offered"] > 10 * summary.scores["Gender"]


def test_prediction_drift_is_reported_separately(shipping) -> None:
    spec, df = shipping
    ref = df.iloc[:1000].assign(delay_probability=0.3)
    cur = df.iloc[1000:1500].assign(delay_probability=0.9)
    _, summary = drift_report(
        ref, cur, spec.numeric, spec.categorical, DriftConfig(), "delay_probability"
    )
    assert summary.prediction_drifted and summary.prediction_score > 0.1
    assert "delay_probability" not in summary.scores  # not counted as a feature
    with pytest.raises(ValueError, match="non-empty"):
        drift_report(ref.iloc[0:0], cur, spec.numeric, spec.categorical, DriftConfig())
