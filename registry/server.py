"""Start, find and stop local server processes (MLflow here; the stack reuses it for Prefect and
BentoML). A server runs detached with its log in a file and a pid file beside it, so a second
start reuses what is running and a stop leaves no orphans."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """A local server could not be started or did not become healthy. The message names it."""


@dataclass(frozen=True)
class LocalServer:
    name: str
    url: str
    health_path: str
    pid_file: Path
    log_file: Path

    @property
    def health_url(self) -> str:
        return self.url.rstrip("/") + self.health_path


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return r.status_code < 400


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def wait_healthy(
    server: LocalServer, timeout_s: float, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_healthy(server.health_url):
            return
        if proc is not None and proc.poll() is not None:
            tail = _tail(server.log_file)
            raise ServerError(
                f"{server.name} exited with code {proc.returncode} before becoming healthy "
                f"at {server.health_url}; log {server.log_file}:\n{tail}"
            )
        time.sleep(0.5)
    raise ServerError(
        f"{server.name} did not answer {server.health_url} within {timeout_s:.0f} s; "
        f"log {server.log_file}:\n{_tail(server.log_file)}"
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def start_server(
    server: LocalServer,
    command: Sequence[str],
    host: str,
    port: int,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``command`` detached unless ``server`` already answers; return the pid.

    A port taken by something that is not our healthy server is an error naming the port.
    """
    pid = read_pid(server.pid_file)
    if is_healthy(server.health_url):
        logger.info("%s already running at %s (pid %s)", server.name, server.url, pid)
        return pid or -1
    if port_in_use(host, port):
        raise ServerError(
            f"port {port} on {host} is in use by another process; {server.name} cannot start "
            f"there (set a different port in configs/platform.yaml or the environment)"
        )
    server.log_file.parent.mkdir(parents=True, exist_ok=True)
    server.pid_file.parent.mkdir(parents=True, exist_ok=True)
    log = open(server.log_file, "ab")  # noqa: SIM115 - handed to the child process
    full_env = {**os.environ, **(env or {})}
    logger.info("starting %s: %s (log %s)", server.name, " ".join(command), server.log_file)
    proc = subprocess.Popen(
        list(command),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=str(cwd) if cwd else None,
        start_new_session=True,
    )
    log.close()
    server.pid_file.write_text(str(proc.pid))
    try:
        wait_healthy(server, timeout_s, proc)
    except ServerError:
        stop_pid(proc.pid)
        server.pid_file.unlink(missing_ok=True)
        raise
    logger.info("%s healthy at %s (pid %s)", server.name, server.url, proc.pid)
    return proc.pid


def stop_pid(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):  # reap if it is our child
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def stop_server(server: LocalServer) -> bool:
    pid = read_pid(server.pid_file)
    if pid is None:
        server.pid_file.unlink(missing_ok=True)
        return False
    logger.info("stopping %s (pid %s)", server.name, pid)
    stop_pid(pid)
    server.pid_file.unlink(missing_ok=True)
    return True
