"""Process set-up for entry points (CLI, deployments): logging and Prefect's home. Called
explicitly, never at import time."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def configure_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("httpx", "httpcore", "urllib3", "alembic", "git", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_prefect_home(state_dir: Path) -> None:
    """Keep Prefect's state inside the project's state folder unless the user chose otherwise."""
    os.environ.setdefault("PREFECT_HOME", str((state_dir / "prefect").resolve()))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_UI_ENABLED", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # the ephemeral API's 20 s default is too short on a busy 2-core machine (several tuning
    # workers starting at once timed out)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
