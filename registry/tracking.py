"""The MLflow tracking server: use a configured one, or start a local one on SQLite."""

from __future__ import annotations

import base64
import logging
import os
import sys
from collections.abc import Callable
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
    """The environment of the ``mlflow server`` the platform starts.

    - MLflow 3's job execution (GenAI judges, trace roll-ups) starts ~8 huey consumer processes
      per server; Shelfwise uses none of it, so it is off unless the environment turns it on.
    - Alias webhooks (swaps pushed to the service, serving/push.py) go to the local service over
      plain HTTP on a loopback address, which MLflow refuses by default (https only, no private
      IPs); the webhook list is cached for 2 s instead of 60 so a newly registered hook is used
      at once; and the webhook secrets are encrypted with a key kept in the state folder, so
      they stay readable across server restarts (MLflow otherwise makes a new key per process;
      ``mlflow_start_env`` adds it when the server starts).
    Each is only a default: the environment wins."""
    defaults = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": "2",
    }
    return {k: os.environ.get(k, v) for k, v in defaults.items()}


def mlflow_start_env(platform: PlatformConfig, env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the webhook-secret encryption key, made when the server first starts."""
    key = os.environ.get("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY")
    return {**env, "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": key or webhook_encryption_key(platform)}


def webhook_encryption_key(platform: PlatformConfig) -> str:
    """The Fernet key the local MLflow server encrypts webhook secrets with (made once)."""
    path = platform.state_path / "run" / "mlflow-webhook.key"
    return read_or_create_secret(path, lambda: base64.urlsafe_b64encode(os.urandom(32)).decode())


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in ``path``, created (owner-only, written whole) when the file is absent."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(make())
    try:
        os.link(tmp, path)  # fails if another process created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (None for any other backend or an in-memory database)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(uri[len(prefix) :])


def prepare_sqlite_backend(uri: str) -> bool:
    """Create a new SQLite backend store with MLflow's schema before its server starts.

    A fresh ``mlflow server`` on SQLite spends ~20-30 s here in its schema migrations, most of it
    waiting on the disk: SQLite syncs every page of every table rebuild. Run here with
    ``synchronous=OFF`` and an in-memory journal into a temporary file that is renamed into place
    once complete, the same migrations take the CPU time alone (~8 s) and a crash leaves no
    half-built database. The server then finds its schema current. Returns True when it created
    the file; an existing file (or another backend) is left to the server."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return False
    import sqlalchemy as sa
    from mlflow.store.db.utils import _initialize_tables

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.init-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    engine = sa.create_engine(f"sqlite:///{tmp}")

    @sa.event.listens_for(engine, "connect")
    def _fast(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA synchronous=OFF")
        dbapi_connection.execute("PRAGMA journal_mode=MEMORY")

    try:
        _initialize_tables(engine)
    except BaseException:
        engine.dispose()
        tmp.unlink(missing_ok=True)
        raise
    engine.dispose()
    os.replace(tmp, path)
    logger.info("created the MLflow schema in %s", path)
    return True


def ensure_tracking_uri(platform: PlatformConfig) -> str:
    """Return the tracking URI to use, starting a local ``mlflow server`` if none is configured."""
    if platform.tracking.uri:
        return platform.tracking.uri
    server = mlflow_server(platform)
    platform.state_path.mkdir(parents=True, exist_ok=True)
    if not server.is_up():
        prepare_sqlite_backend(platform.mlflow_backend_store_uri)
    start_server(
        server,
        mlflow_server_command(platform),
        platform.tracking.host,
        platform.tracking.port,
        platform.tracking.startup_timeout_s,
        env=mlflow_start_env(platform, mlflow_server_env()),
    )
    return server.url


def stop_tracking_server(platform: PlatformConfig) -> bool:
    return stop_server(mlflow_server(platform))
