"""Platform configuration: where state lives and how to reach the servers."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shelfwise.configs.base import StrictModel
from shelfwise.configs.loader import load_config, resolve_config_path

ENV_OVERRIDES: dict[str, str] = {
    "state_dir": "SHELFWISE_HOME",
    "data_dir": "SHELFWISE_DATA_DIR",
    "tracking.uri": "SHELFWISE_TRACKING_URI",
    "tracking.port": "SHELFWISE_MLFLOW_PORT",
    "tracking.backend_store_uri": "SHELFWISE_MLFLOW_BACKEND_STORE_URI",
    "tracking.artifact_root": "SHELFWISE_MLFLOW_ARTIFACT_ROOT",
    "store.url": "SHELFWISE_STORE_URL",
    "prefect.api_url": "SHELFWISE_PREFECT_API_URL",
    "prefect.port": "SHELFWISE_PREFECT_PORT",
    "serving.port": "SHELFWISE_SERVING_PORT",
    "serving.api_key": "SHELFWISE_API_KEY",
}


class TrackingConfig(StrictModel):
    uri: str | None = Field(None, description="Existing MLflow tracking server; None starts one")
    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)
    backend_store_uri: str | None = None
    artifact_root: str | None = None
    startup_timeout_s: float = Field(120.0, gt=0)
    experiment_prefix: str = "shelfwise"


class StoreConfig(StrictModel):
    url: str | None = Field(None, description="SQLAlchemy URL of the platform's SQL store")


class PrefectConfig(StrictModel):
    api_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(4200, ge=1, le=65535)
    work_pool: str = "shelfwise-process"


class ServingConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    api_key: str | None = None


class PlatformConfig(StrictModel):
    state_dir: Path = Path(".shelfwise")
    data_dir: Path = Path("data")
    tracking: TrackingConfig = TrackingConfig()
    store: StoreConfig = StoreConfig()
    prefect: PrefectConfig = PrefectConfig()
    serving: ServingConfig = ServingConfig()

    @property
    def state_path(self) -> Path:
        return self.state_dir.resolve()

    @property
    def store_url(self) -> str:
        if self.store.url:
            return self.store.url
        return f"sqlite:///{self.state_path / 'shelfwise.db'}"

    @property
    def mlflow_backend_store_uri(self) -> str:
        if self.tracking.backend_store_uri:
            return self.tracking.backend_store_uri
        return f"sqlite:///{self.state_path / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        if self.tracking.artifact_root:
            return self.tracking.artifact_root
        return str(self.state_path / "mlartifacts")


def load_platform_config(path: str | Path = "platform") -> PlatformConfig:
    return load_config(resolve_config_path(path), PlatformConfig, ENV_OVERRIDES)
