"""Model configuration of the tabular kinds (classification, regression): split, CV folds and
the default hyper-parameters of every candidate family."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from shelfwise.configs.base import StrictModel


class SplitConfig(StrictModel):
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    cv_folds: int = Field(5, ge=2, le=20)


class SeverityBands(StrictModel):
    """Probability thresholds (strictly greater than) for each severity."""

    critical: float = Field(0.7, ge=0, le=1)
    warning: float = Field(0.5, ge=0, le=1)
    info: float = Field(0.3, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> SeverityBands:
        if not (self.critical >= self.warning >= self.info):
            raise ValueError("severity bands must satisfy critical >= warning >= info")
        return self


class XGBoostParams(StrictModel):
    n_estimators: int = Field(200, ge=1)
    max_depth: int = Field(3, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(10.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    reg_alpha: float = Field(0.0, ge=0)
    gamma: float = Field(0.0, ge=0)
    n_jobs: int = 2

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump()


class LogisticParams(StrictModel):
    C: float = Field(1.0, gt=0)
    max_iter: int = Field(1000, ge=10)

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump()


class RidgeParams(StrictModel):
    alpha: float = Field(1.0, ge=0)

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump()


class RandomForestParams(StrictModel):
    n_estimators: int = Field(300, ge=1)
    max_depth: int | None = Field(8, ge=1)
    min_samples_leaf: int = Field(5, ge=1)
    max_features: float = Field(0.5, gt=0, le=1)
    n_jobs: int = 2

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump()


# the parameter model of each family (its section in the training config)
FAMILY_PARAMS: dict[str, type[StrictModel]] = {
    "logistic": LogisticParams,
    "ridge": RidgeParams,
    "random_forest": RandomForestParams,
    "xgboost": XGBoostParams,
}


class TabularTrainingConfig(StrictModel):
    """A tabular task's ``training`` section (configs/tasks.py ``training_config`` fills in the
    model, experiment and dataset from the declaration)."""

    registered_model_name: str = Field("model", min_length=1)
    experiment: str = Field("Default", min_length=1)
    dataset: str = Field("dataset", min_length=1, description="the dataset spec's name")
    row_filter: str | None = Field(
        None, description="pandas query selecting the rows to learn from, e.g. a segment"
    )
    split: SplitConfig = SplitConfig()
    xgboost: XGBoostParams = XGBoostParams()
    logistic: LogisticParams = LogisticParams()
    ridge: RidgeParams = RidgeParams()
    random_forest: RandomForestParams = RandomForestParams()
    severity: SeverityBands = SeverityBands()
    reference_sample_size: int = Field(2000, ge=0)

    def params(self, family: str) -> Any:
        """The configured hyper-parameters of ``family`` (its section of this config)."""
        if family not in FAMILY_PARAMS:
            raise ValueError(f"unknown tabular family {family!r} (known: {sorted(FAMILY_PARAMS)})")
        return getattr(self, family)
