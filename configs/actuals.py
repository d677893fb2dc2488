"""What a forecast task declares about live data: how ingested actuals move the forecast origin
(``actuals:``) and when stock positions raise alerts (``inventory:``). Both are optional keys of
a task declaration (configs/tasks.py); the defaults need no YAML.

```yaml
actuals:
  correction: ratio        # none | ratio: rescale by the recent actual / forecast ratio
  window: 28               # the latest periods of actuals the ratio is computed on
  shrinkage: 28            # pseudo-periods pulling a series' ratio towards the pooled one
  max_rows: 10000          # rows per POST /v1/<task>/actuals
inventory:
  lead_time: 7             # periods
  service_level: 0.95
  alert_probability: 0.2   # alert when P(stockout within the lead time) exceeds this
  bands: {critical: 0.8, warning: 0.5}
  positions: null          # a CSV/Parquet of on-hand stock (series keys + on_hand column)
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shelfwise.configs.base import StrictModel


class ActualsSettings(StrictModel):
    """How ingested actuals move a served forecast (serving/current.py)."""

    correction: Literal["none", "ratio"] = Field(
        "ratio",
        description="none: features recomputed from the history only; ratio: also rescale the "
        "forecast by each series' recent actual/forecast ratio, shrunk towards the ratio pooled "
        "over every series with actuals (an intercept correction)",
    )
    window: int = Field(
        28, ge=1, description="latest periods of actuals (inside the stale window) the ratio uses"
    )
    shrinkage: float = Field(
        28.0,
        ge=0,
        description="pseudo-periods of the pooled ratio in a series' ratio: weight n / (n + k)",
    )
    max_rows: int = Field(10_000, ge=1, description="rows per POST /v1/<task>/actuals")


class SeverityBandsAlert(StrictModel):
    critical: float = Field(0.8, gt=0, le=1)
    warning: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> SeverityBandsAlert:
        if self.warning > self.critical:
            raise ValueError(f"warning {self.warning} must be <= critical {self.critical}")
        return self


class InventorySettings(StrictModel):
    """Stock alerts of a forecast task (serving/alerts.py)."""

    lead_time: int = Field(7, ge=1, description="replenishment lead time (periods)")
    service_level: float = Field(0.95, ge=0.5, le=0.999)
    alert_probability: float = Field(
        0.2, gt=0, lt=1, description="alert when P(stockout within the lead time) exceeds this"
    )
    bands: SeverityBandsAlert = SeverityBandsAlert()
    positions: str | None = Field(
        None,
        description="CSV/Parquet of on-hand stock (the series key columns + on_hand); relative "
        "paths resolve against the platform's data_dir",
    )
    on_hand_column: str = Field("on_hand", min_length=1)
