"""``--json`` output: the command's result is the only thing on stdout.

While a ``--json`` command runs, whatever else would reach stdout goes to stderr: rich tables and
messages, log lines, MLflow's "View run ... at" lines (``sys.stdout.write`` at the end of a run),
XGBoost's ``print``-ed warnings, and the output of child processes (task-runner workers, servers)
which inherit file descriptor 1. Then the JSON is written to the real stdout, so
``shelfwise train delay-risk --json | jq .version`` works.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import typer


def _redirect_fd1() -> int | None:
    """Point file descriptor 1 at stderr's; returns a copy of the old one (None: no fd 1)."""
    try:
        saved = os.dup(1)
    except OSError:
        return None
    try:
        os.dup2(2, 1)
    except OSError:
        os.close(saved)
        return None
    return saved


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Within the block, stdout (the Python stream and file descriptor 1) writes to stderr."""
    if not enabled:
        yield
        return
    original = sys.stdout
    original.flush()
    saved = _redirect_fd1()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        # text buffered in the original stream during the block belongs to the block: flush it
        # while fd 1 still points at stderr
        with contextlib.suppress(Exception):
            original.flush()
            sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: NaN and infinities become null (``jq`` rejects ``NaN``),
    NumPy scalars and arrays plain numbers and lists, dates ISO strings, anything else ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if not isinstance(value, str | bytes) and hasattr(value, "tolist"):
        return jsonable(value.tolist())  # numpy scalars and arrays
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def emit_json(value: Any) -> None:
    """Write ``value`` as JSON to stdout: the one deliberate write of a ``--json`` command."""
    typer.echo(json.dumps(jsonable(value), indent=2, allow_nan=False))
