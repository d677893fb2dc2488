"""Process set-up for entry points (CLI, deployments): logging and Prefect's home. Called
explicitly, never at import time."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
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


# Every platform logger is named after its module, so this one name is their common parent.
PLATFORM_LOGGER = "shelfwise"
EXTRA_LOGGERS_ENV = "PREFECT_LOGGING_EXTRA_LOGGERS"


def prefect_logging_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment under which Prefect ships the platform's log lines (registration, gate
    decisions, tuning trials) to the flow-run log, next to its own.

    Prefect reads ``PREFECT_LOGGING_EXTRA_LOGGERS`` once, when ``import prefect`` sets up logging,
    so it belongs in the environment of a process before Prefect is imported (the CLI's set-up,
    the worker and so its flow runs). Names the user already listed are kept. Outside a flow run
    those records have no run to go to: they are not sent, without Prefect's warning.
    """
    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get(EXTRA_LOGGERS_ENV, "").split(",") if n.strip()]
    if PLATFORM_LOGGER not in names:
        names.append(PLATFORM_LOGGER)
    return {
        EXTRA_LOGGERS_ENV: ",".join(names),
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": env.get(
            "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore"
        ),
    }


def configure_prefect_logging() -> None:
    """Put ``prefect_logging_env`` into this process's environment (before Prefect's import)."""
    os.environ.update(prefect_logging_env())


def capture_platform_logs(level: int = logging.INFO) -> None:
    """Let the platform's ``level`` lines through where Prefect configured logging itself.

    In a flow-run process started by a worker, Prefect's logging config leaves the root logger at
    WARNING and gives the extra loggers a handler but no level, so INFO lines (a registered
    version, a gate decision) would never reach the handler. Called by each flow when it starts
    (not at import); a no-op where logging already lets them through (the CLI, ``-v``)."""
    logger = logging.getLogger(PLATFORM_LOGGER)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
