"""Headless Debian Chromium (the system binary `.ci/run` / `make browser` installs; nothing
downloads a browser): the rendered DOM of a page after its scripts ran, and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def chromium() -> str:
    """The browser; missing, the UI check fails (it never skips: `make test` installs it)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: `make browser` installs Debian's package")
    return exe


def render(url: str, screenshot: Path, budget_ms: int = 20_000) -> str:
    """The DOM of ``url`` once its scripts settled (virtual time), and a PNG of it."""
    base = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1440,1000",
        f"--virtual-time-budget={budget_ms}",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False
    ).stdout
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180, check=False
    )
    return dom
