"""Warm starts (flows/warm.py): a real fork server running the real ``prefect.engine``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from shelfwise.flows.warm import SOCKET_ENV, entrypoint_modules, ping, socket_path

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_socket_path_is_in_the_state_folder_unless_too_long(tmp_path):
    assert socket_path(tmp_path) == tmp_path.resolve() / "run" / "warm.sock"
    deep = tmp_path / ("x" * 120)
    short = socket_path(deep)
    assert short.parent == Path("/tmp") or len(os.fsencode(short)) <= 100
    assert short == socket_path(deep) and short != socket_path(tmp_path / ("y" * 120))


def test_entrypoint_modules_are_the_module_paths_of_prefect_yaml(tmp_path):
    shipped = entrypoint_modules(ROOT / "prefect.yaml")
    assert {"shelfwise.flows.train", "shelfwise.flows.monitor"} <= set(shipped)
    assert len(shipped) == len(set(shipped))
    own = tmp_path / "prefect.yaml"
    own.write_text(
        "deployments:\n- entrypoint: my_flows/etl.py:nightly\n"
        "- entrypoint: pkg.flows.run\n- entrypoint: pkg.flows.other\n"
    )
    assert entrypoint_modules(own) == ["pkg.flows"]
    assert entrypoint_modules(tmp_path / "missing.yaml") == []


@pytest.fixture
def silent_api():
    """A Prefect API URL that accepts connections and never answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    yield f"http://127.0.0.1:{silent.getsockname()[1]}/api"
    silent.close()


@pytest.fixture
def server(tmp_path, silent_api):
    """A warm server whose own environment points Prefect at the silent API."""
    sock = socket_path(tmp_path)
    log = (tmp_path / "warm.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shelfwise.flows.warm", "serve", "--socket", str(sock)]
        + ["prefect.engine", "no_such_module_xyz"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_API_URL": silent_api},
    )
    deadline = time.monotonic() + 120
    while ping(sock) is None:
        assert proc.poll() is None, (tmp_path / "warm.log").read_text()
        assert time.monotonic() < deadline, "warm server did not answer"
        time.sleep(0.2)
    yield sock, tmp_path / "warm.log"
    proc.terminate()
    proc.wait(30)
    log.close()
    assert not sock.exists()  # it removes its socket on SIGTERM


def _launch(args, env, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "shelfwise.flows.warm", "run", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_a_run_is_a_fork_of_the_server_with_the_launchers_streams_and_exit_code(server):
    sock, log = server
    state = ping(sock)
    assert state["preloaded"] == ["prefect.engine"] and state["forks"] == 0
    assert "no_such_module_xyz" in state["failed"] and state["fork_safe"]
    proc = _launch(["not-a-uuid"], {SOCKET_ENV: str(sock)})
    out, err = proc.communicate(timeout=120)
    # prefect.engine's own refusal, in the launcher's stderr, with its exit code
    assert proc.returncode == 1
    assert "Invalid flow run id" in err and "not-a-uuid" in err
    assert "found in sys.modules" not in err  # runpy's warning about the preload is silenced
    assert "Invalid flow run id" not in log.read_text()
    assert ping(sock)["forks"] == 1


def test_the_run_uses_the_launchers_environment_not_the_servers(server, tmp_path):
    sock, _ = server
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the run fails to reach "its" API
    env = {
        SOCKET_ENV: str(sock),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_CLIENT_MAX_RETRIES": "0",
    }
    proc = _launch([str(uuid.uuid4())], env, cwd=tmp_path)
    _, err = proc.communicate(timeout=600)
    # refused by the launcher's API, not left waiting by the server's silent one
    assert proc.returncode != 0
    assert "ConnectError" in err and "Connection refused" in err, err[-3000:]
    assert "Timeout" not in err
    assert ping(sock)["forks"] == 1


def test_sigterm_to_the_launcher_stops_the_forked_run(server, silent_api):
    sock, _ = server
    # the run hangs on the silent API until it is stopped
    proc = _launch([str(uuid.uuid4())], {SOCKET_ENV: str(sock), "PREFECT_API_URL": silent_api})
    deadline = time.monotonic() + 60
    while ping(sock)["forks"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)
    assert proc.poll() is None  # still waiting on the silent API
    run_pids = _forks_of(ping(sock)["pid"])
    assert len(run_pids) == 2, run_pids  # the supervisor and the run
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # died of the run's signal, as a cold run
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in run_pids):
        assert time.monotonic() < deadline, "the forked run outlived its launcher"
        time.sleep(0.1)


def test_without_a_server_the_launcher_starts_cold(tmp_path):
    for env in ({SOCKET_ENV: str(tmp_path / "nobody.sock")}, {}):
        clean = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
        proc = subprocess.run(
            [sys.executable, "-m", "shelfwise.flows.warm", "run", "not-a-uuid"],
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 1
        assert "Invalid flow run id" in proc.stderr


def _forks_of(server_pid: int) -> list[int]:
    """The server's forked copies (a supervisor per run and the run itself)."""
    import psutil

    return [c.pid for c in psutil.Process(server_pid).children(recursive=True)]


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
