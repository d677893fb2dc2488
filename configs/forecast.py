"""Demand-forecast configuration: horizon, backtest, Prophet, the XGBoost residual model,
lag/rolling features, prediction intervals, parallelism and data handling."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path


class BacktestConfig(StrictModel):
    folds: int = Field(3, ge=1, le=20, description="rolling origins, the latest one last")
    step: int | None = Field(
        None, ge=1, description="periods between origins; None = the horizon (no overlap)"
    )


class ProphetSettings(StrictModel):
    """One Prophet per series, fitted with MAP (no MCMC, no uncertainty sampling)."""

    growth: Literal["linear", "flat"] = "linear"
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    yearly_seasonality: int | bool = Field(10, description="Fourier order, or true/false")
    weekly_seasonality: int | bool = True
    daily_seasonality: bool = False
    changepoint_prior_scale: float = Field(0.05, gt=0)
    seasonality_prior_scale: float = Field(10.0, gt=0)
    holidays_prior_scale: float = Field(10.0, gt=0)
    changepoint_range: float = Field(0.8, gt=0, le=1)
    country_holidays: str | None = Field(
        "US", description="Prophet built-in country holidays; None = no holidays"
    )
    mcmc_samples: Literal[0] = Field(0, description="MAP fit only: intervals come from residuals")
    uncertainty_samples: Literal[0] = 0
    max_history: int | None = Field(
        None, ge=2, description="fit Prophet on at most this many latest periods (speed)"
    )

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude={"country_holidays", "max_history"})


class ResidualModelParams(StrictModel):
    """The global XGBoost fitted on Prophet's residuals (and, alone, as a baseline)."""

    n_estimators: int = Field(300, ge=1)
    max_depth: int = Field(6, ge=1)
    learning_rate: float = Field(0.08, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(50.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    max_bin: int = Field(128, ge=2)
    n_jobs: int = Field(2, ge=1)
    seed: int = 42
    max_train_periods: int | None = Field(
        None, ge=1, description="train on at most this many latest periods per series"
    )

    def as_kwargs(self) -> dict[str, Any]:
        out = self.model_dump(exclude={"seed", "max_train_periods"})
        out["random_state"] = self.seed
        return out


class FeatureConfig(StrictModel):
    """Lag/rolling features. Every lag is >= the horizon, so no feature of a forecast row can
    read a value after the forecast origin (checked against the horizon below)."""

    lags: list[int] = Field(default_factory=lambda: [90, 364], min_length=1)
    rolling_windows: list[int] = Field(
        default_factory=lambda: [28, 91], description="means of the window ending at min(lags)"
    )
    level_window: int = Field(
        365, ge=1, description="rolling mean (ending at min(lags)) that normalises the features"
    )
    calendar: list[
        Literal[
            "hour", "dayofweek", "dayofmonth", "dayofyear", "weekofyear", "month", "quarter", "year"
        ]
    ] = Field(default_factory=lambda: ["dayofweek", "month", "dayofyear", "year"])
    residual: Literal["ratio_trend", "ratio_yhat", "difference_yhat"] = Field(
        "ratio_trend",
        description="what XGBoost learns: y / Prophet trend, y / Prophet yhat, or y - yhat",
    )


class IntervalConfig(StrictModel):
    level: float = Field(
        0.9, gt=0, lt=1, description="nominal coverage of [yhat_lower, yhat_upper]"
    )
    min_residuals_per_series: int = Field(
        10, ge=1, description="below this, a series uses the median scale of all series"
    )
    horizon_buckets: int = Field(
        4,
        ge=1,
        description="conformal quantiles of the scaled out-of-sample residuals per group of "
        "horizon steps (1 = pooled over the horizon)",
    )


class DataHandling(StrictModel):
    gaps: Literal["error", "fill_zero", "interpolate"] = Field(
        "error", description="missing periods inside a series"
    )
    short_series: Literal["error", "skip", "fallback"] = Field(
        "fallback",
        description="series shorter than min_history periods: fail, drop with a warning, or "
        "forecast them with the `fallback` forecaster (counted and reported)",
    )
    fallback: Literal["seasonal_naive", "level"] = Field(
        "seasonal_naive",
        description="forecaster of short series: the last season repeated (the longest season "
        "the series covers, else its mean), or level (the mean of the last season)",
    )
    min_fallback_history: int = Field(
        1, ge=1, description="series shorter than this are dropped even with short_series fallback"
    )
    min_history: int | None = Field(
        None, ge=1, description="None = max(lags) + level_window + 2 * horizon"
    )
    max_series: int | None = Field(
        None, ge=1, description="keep only the first N series (sorted by key); None = all"
    )
    train_end: date | None = Field(
        None,
        description="use the data set's rows up to and including this date only (None = all); "
        "actuals passed to training as extra data extend past it",
    )


DASK_ADDRESS_ENV = "SHELFWISE_DASK_ADDRESS"


class FanoutConfig(StrictModel):
    """How flows fan the per-series Prophet fits out (``workers`` x batches of ``batch_size``).

    ``process``: one Prefect task per batch on Prefect's ProcessPoolTaskRunner; ``dask``: the
    same tasks on prefect-dask's DaskTaskRunner (a local cluster of ``workers`` processes, or
    the scheduler at ``address``); ``threads``: Prefect's ThreadPoolTaskRunner; ``joblib``: no
    Prefect tasks, a joblib process pool (what code outside flows always uses)."""

    runner: Literal["process", "dask", "threads", "joblib"] = Field(
        "process", description="task runner for the Prophet batches"
    )
    address: str | None = Field(
        None,
        description=f"dask only: scheduler address of an existing cluster (e.g. "
        f"tcp://10.0.0.5:8786); {DASK_ADDRESS_ENV} overrides it when the runner is dask; "
        "None and no such variable = a local cluster of `workers` processes",
    )

    @model_validator(mode="after")
    def _address_needs_dask(self) -> FanoutConfig:
        if self.address and self.runner != "dask":
            raise ValueError(
                f"fanout.address ({self.address}) is for runner 'dask', not '{self.runner}' "
                "(unset it, or set fanout.runner: dask)"
            )
        return self


class ForecastConfig(StrictModel):
    registered_model_name: str = Field("model", min_length=1, description="from the task")
    experiment: str = Field("Default", min_length=1, description="from the task")
    dataset: str = "store_item_demand"
    horizon: int = Field(90, ge=1, description="periods ahead (days or weeks, per the spec)")
    backtest: BacktestConfig = BacktestConfig()
    prophet: ProphetSettings = ProphetSettings()
    xgboost: ResidualModelParams = ResidualModelParams()
    features: FeatureConfig = FeatureConfig()
    intervals: IntervalConfig = IntervalConfig()
    candidates: list[str] | None = Field(
        None, description="families that compete (set from the task; None = the kind's default)"
    )
    data: DataHandling = DataHandling()
    seasonal_naive_periods: dict[str, int] = Field(
        default_factory=lambda: {"seasonal_naive_week": 7, "seasonal_naive_year": 364},
        description="baseline name -> season length in periods",
    )
    mase_period: int | None = Field(
        None,
        ge=1,
        description="season of MASE's in-sample naive scale; None = the shortest "
        "season of the frequency (H 24, D 7, W 52, M 12)",
    )
    season_length: int | None = Field(
        None,
        ge=1,
        description="season of the seasonal_naive family; None = the longest season of the "
        "frequency (H 168, D 364, W 52, M 12) that every series' history covers",
    )
    workers: int = Field(2, ge=1, description="processes fitting Prophet models in parallel")
    batch_size: int = Field(
        50, ge=1, description="series per parallel batch: one Prefect task and progress log each"
    )
    fanout: FanoutConfig = FanoutConfig()
    plot_series: int = Field(4, ge=0, description="forecast-vs-actual plots logged per run")
    origin_extension: int | None = Field(
        None,
        ge=0,
        description="periods after the horizon for which Prophet's components (and regressor "
        "values) are kept, so that a served forecast may start up to this many periods after "
        "the training data once actuals arrive (serving/current.py); None = the horizon",
    )

    @property
    def extension_periods(self) -> int:
        return self.horizon if self.origin_extension is None else self.origin_extension

    @model_validator(mode="after")
    def _lags_respect_horizon(self) -> ForecastConfig:
        short = [lag for lag in self.features.lags if lag < self.horizon]
        if short:
            raise ValueError(
                f"features.lags {short} are shorter than horizon {self.horizon}: a forecast "
                "row would read values after its forecast origin"
            )
        return self

    @property
    def min_lag(self) -> int:
        return min(self.features.lags)

    def mase_period_for(self, frequency: str) -> int:
        from shelfwise.configs.datasets import SEASON_LENGTHS

        return self.mase_period or SEASON_LENGTHS[frequency][0]

    @property
    def min_history(self) -> int:
        if self.data.min_history is not None:
            return self.data.min_history
        return max(self.features.lags) + self.features.level_window + 2 * self.horizon


def load_forecast_config(path: str | Path) -> ForecastConfig:
    return load_config(resolve_config_path(path), ForecastConfig)
