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
from collections.abc import Callable, Mapping, Sequence
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
    # a health check replacing the GET on health_url (e.g. a worker without an HTTP endpoint)
    probe: Callable[[], bool] | None = None

    @property
    def health_url(self) -> str:
        return self.url.rstrip("/") + self.health_path

    @property
    def health_target(self) -> str:
        return self.health_url if self.probe is None else f"{self.name}'s health probe"

    def is_up(self) -> bool:
        return self.probe() if self.probe is not None else is_healthy(self.health_url)


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
        if server.is_up():
            return
        if proc is not None and proc.poll() is not None:
            tail = _tail(server.log_file)
            raise ServerError(
                f"{server.name} exited with code {proc.returncode} before becoming healthy "
                f"at {server.health_target}; log {server.log_file}:\n{tail}"
            )
        time.sleep(0.5)
    raise ServerError(
        f"{server.name} did not answer {server.health_target} within {timeout_s:.0f} s; "
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
    port: int | None,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``command`` detached unless ``server`` already answers; return the pid.

    A port taken by something that is not our healthy server is an error naming the port.
    ``port=None`` skips the port check (a process that listens on no port of its own).
    """
    pid = read_pid(server.pid_file)
    if server.is_up():
        logger.info("%s already running at %s (pid %s)", server.name, server.url, pid)
        return pid or -1
    if port is not None and port_in_use(host, port):
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


def descendants(pid: int) -> list[int]:
    """Pids of every descendant of ``pid``, including those that moved to their own session
    (a Prefect worker starts each flow run in a new session)."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_pid(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``. Descendants
    that left the group (their own session) are stopped the same way, so nothing is orphaned."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    groups = {pgid}
    for child in descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(child))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while groups and time.monotonic() < deadline:
        for group in list(groups):
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                groups.discard(group)
        with contextlib.suppress(ChildProcessError):  # reap if it is our child
            os.waitpid(pid, os.WNOHANG)
        if groups:
            time.sleep(0.2)
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def stop_server(server: LocalServer) -> bool:
    pid = read_pid(server.pid_file)
    if pid is None:
        server.pid_file.unlink(missing_ok=True)
        return False
    logger.info("stopping %s (pid %s)", server.name, pid)
    stop_pid(pid)
    server.pid_file.unlink(missing_ok=True)
    return True
