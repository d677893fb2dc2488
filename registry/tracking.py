"""The MLflow tracking server: use a configured one, or start a local one on SQLite."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from shelfwise.configs.platform import PlatformConfig
from shelfwise.registry.server import LocalServer, start_server, stop_server

logger = logging.getLogger(__name__)


def mlflow_server(platform: PlatformConfig) -> LocalServer:
    host, port = platform.tracking.host, platform.tracking.port
    state = platform.state_path
    return LocalServer(
        name="mlflow server",
        url=f"http://{host}:{port}",
        health_path="/health",
        pid_file=state / "run" / "mlflow.pid",
        log_file=state / "logs" / "mlflow.log",
    )


def mlflow_server_command(platform: PlatformConfig) -> list[str]:
    artifact_root = platform.mlflow_artifact_root
    if "://" not in artifact_root:
        Path(artifact_root).mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        platform.mlflow_backend_store_uri,
        "--artifacts-destination",
        artifact_root,
        "--serve-artifacts",
        "--host",
        platform.tracking.host,
        "--port",
        str(platform.tracking.port),
        "--workers",
        "1",
    ]


def mlflow_server_env() -> dict[str, str]:
    """MLflow 3's job execution (GenAI judges, trace roll-ups) starts ~8 huey consumer processes
    per server; Shelfwise uses none of it, so it is off unless the environment turns it on."""
    return {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get(
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
        )
    }


def ensure_tracking_uri(platform: PlatformConfig) -> str:
    """Return the tracking URI to use, starting a local ``mlflow server`` if none is configured."""
    if platform.tracking.uri:
        return platform.tracking.uri
    server = mlflow_server(platform)
    platform.state_path.mkdir(parents=True, exist_ok=True)
    start_server(
        server,
        mlflow_server_command(platform),
        platform.tracking.host,
        platform.tracking.port,
        platform.tracking.startup_timeout_s,
        env=mlflow_server_env(),
    )
    return server.url


def stop_tracking_server(platform: PlatformConfig) -> bool:
    return stop_server(mlflow_server(platform))
