"""`--json` plumbing (flows/cli_output.py) and the Prefect logging environment
(flows/environment.py), without servers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np

from shelfwise.flows.cli_output import jsonable
from shelfwise.flows.environment import (
    PLATFORM_LOGGER,
    capture_platform_logs,
    prefect_logging_env,
)

NOISY_COMMAND = r"""
import os, subprocess, sys
from shelfwise.flows.cli_output import emit_json, stdout_to_stderr

print("before")
with stdout_to_stderr():
    print("print")
    sys.stdout.write("View run x at: http://mlflow\n")
    os.write(1, b"fd 1\n")
    subprocess.run([sys.executable, "-c", "print('child')"], check=True)
    sys.__stdout__.write("buffered in the original stream\n")
emit_json({"ok": float("nan"), "n": 1})
"""


def test_only_the_json_reaches_stdout() -> None:
    out = subprocess.run(
        [sys.executable, "-c", NOISY_COMMAND], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("before\n")
    assert json.loads(out.stdout.removeprefix("before\n")) == {"ok": None, "n": 1}
    for line in ("print", "View run x", "fd 1", "child", "buffered in the original stream"):
        assert line in out.stderr, out.stderr


def test_jsonable_is_strict_json() -> None:
    value = {
        "f": np.float32(0.5),
        "i": np.int64(3),
        "a": np.array([1.0, np.inf]),
        "t": datetime(2024, 1, 2, tzinfo=UTC),
        "nan": float("nan"),
        1: (None, True),
    }
    text = json.dumps(jsonable(value), allow_nan=False)
    assert json.loads(text) == {
        "f": 0.5,
        "i": 3,
        "a": [1.0, None],
        "t": "2024-01-02T00:00:00+00:00",
        "nan": None,
        "1": [None, True],
    }


def test_prefect_logging_env_keeps_the_users_extra_loggers() -> None:
    env = prefect_logging_env({"PREFECT_LOGGING_EXTRA_LOGGERS": "dask, scipy"})
    assert env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "dask,scipy,shelfwise"
    assert env["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] == "ignore"
    again = prefect_logging_env({"PREFECT_LOGGING_EXTRA_LOGGERS": "shelfwise"})
    assert again["PREFECT_LOGGING_EXTRA_LOGGERS"] == "shelfwise"


def test_worker_env_names_the_platform_logger(tmp_path) -> None:
    from shelfwise.configs.platform import PlatformConfig
    from shelfwise.flows.stack import flow_run_env

    env = flow_run_env(PlatformConfig(state_dir=tmp_path, data_dir=tmp_path), tmp_path)
    assert PLATFORM_LOGGER in env["PREFECT_LOGGING_EXTRA_LOGGERS"].split(",")


def test_capture_platform_logs_lowers_only_a_stricter_level() -> None:
    logger = logging.getLogger(PLATFORM_LOGGER)
    root = logging.getLogger()
    saved = logger.level, root.level
    try:
        logger.setLevel(logging.NOTSET)
        root.setLevel(logging.WARNING)  # what Prefect's logging config leaves in a flow run
        capture_platform_logs()
        assert logging.getLogger(f"{PLATFORM_LOGGER}.registry.log").isEnabledFor(logging.INFO)
        logger.setLevel(logging.NOTSET)
        root.setLevel(logging.DEBUG)  # `-v` in the CLI: left alone
        capture_platform_logs()
        assert logger.level == logging.NOTSET
    finally:
        logger.setLevel(saved[0])
        root.setLevel(saved[1])
