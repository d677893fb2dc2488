"""Start and stop `bentoml serve` for the Shelfwise service as a local detached server
(registry/server.py does the process handling; readiness is BentoML's /readyz, which answers
once the declared tasks with a champion are loaded)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from shelfwise.configs.platform import PlatformConfig
from shelfwise.registry.server import LocalServer, start_server, stop_server

SERVICE_IMPORT = "shelfwise.serving.service:ShelfwiseService"


def bentoml_server(
    state_dir: Path, host: str, port: int, name: str = "bentoml-serve"
) -> LocalServer:
    state = state_dir.resolve()
    return LocalServer(
        name=name,
        url=f"http://{host}:{port}",
        health_path="/readyz",
        pid_file=state / "run" / f"{name}.pid",
        log_file=state / "logs" / f"{name}.log",
    )


def serve_command(
    host: str,
    port: int,
    target: str = SERVICE_IMPORT,
    working_dir: Path | None = None,
    python: str = sys.executable,
) -> list[str]:
    return [
        python,
        "-m",
        "bentoml",
        "serve",
        target,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(working_dir or Path.cwd()),
    ]


def serving_env(platform: PlatformConfig, tracking_uri: str) -> dict[str, str]:
    """What the service process needs to find the registry and the store."""
    return {
        "SHELFWISE_TRACKING_URI": tracking_uri,
        "SHELFWISE_STORE_URL": platform.store_url,
        "SHELFWISE_HOME": str(platform.state_path),
        "SHELFWISE_DATA_DIR": str(platform.data_dir.resolve()),
        "BENTOML_DO_NOT_TRACK": "true",
    }


def start_serving(
    platform: PlatformConfig,
    tracking_uri: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 180.0,
    name: str = "bentoml-serve",
    target: str = SERVICE_IMPORT,
    python: str = sys.executable,
    cwd: Path | None = None,
) -> tuple[LocalServer, int]:
    """Start `bentoml serve` detached and wait until /readyz answers; returns (server, pid).

    ``python``: the interpreter whose environment serves (default this one); ``cwd``: where it
    starts (default the working directory)."""
    host = platform.serving.host
    port = port or platform.serving.port
    server = bentoml_server(platform.state_path, host, port, name)
    full_env = {**serving_env(platform, tracking_uri), **(env or {})}
    pid = start_server(
        server,
        serve_command(host, port, target, working_dir=cwd, python=python),
        host,
        port,
        timeout_s,
        env=full_env,
        cwd=cwd or Path.cwd(),
    )
    return server, pid


def stop_serving(server: LocalServer) -> bool:
    return stop_server(server)
