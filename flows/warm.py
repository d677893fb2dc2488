"""Warm starts for flow runs: a fork server that has imported the flows once.

A flow run of the process worker is ``python -m prefect.engine``: a fresh interpreter that
imports Prefect, MLflow, pandas, scikit-learn and the flow's module before its first line runs
(15 s for the monitoring flow on this 2-core machine, more under load). That start is the
largest stage of the retrain loop after detection.

The stack's ``warm`` component (``python -m shelfwise.flows.warm serve``) imports the modules
of ``prefect.yaml``'s entrypoints and ``warm_preload`` once and then listens on a Unix socket.
The work pool's default command is this module's launcher (``python -m shelfwise.flows.warm
run``): it imports nothing but the standard library, sends its environment, working folder,
arguments and standard streams (as file descriptors, ``SCM_RIGHTS``) to the server, which forks
a copy that runs ``prefect.engine`` exactly as the cold command would, under the flow run's own
environment and a fresh Prefect settings context. The launcher forwards SIGTERM/SIGINT to that
copy and exits with its exit code, so the worker's cancellation, crash detection and log
streaming see what they see for a cold start.

Without a reachable server (no ``SHELFWISE_WARM_SOCKET``, the server stopped, a server that
has Python threads and so cannot fork safely) the launcher ``exec``s the cold command: a warm
start is an optimisation, never a dependency. The server's modules are those of its own start:
after editing the code, restart it (``shelfwise stack down && shelfwise stack up``), as for any
long-running server.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

SOCKET_ENV = "SHELFWISE_WARM_SOCKET"
ENGINE = ("-m", "prefect.engine")
_LENGTH = struct.Struct("!I")
_MAX_MESSAGE = 16 * 1024 * 1024
_UNIX_PATH_MAX = 100  # sun_path is 104-108 bytes, depending on the platform


# --------------------------------------------------------------------------- protocol


def socket_path(state_dir: Path) -> Path:
    """The server's socket in the state folder, or (when that path is too long for a Unix
    socket) a name in the temporary folder derived from it."""
    path = Path(state_dir).resolve() / "run" / "warm.sock"
    if len(os.fsencode(path)) <= _UNIX_PATH_MAX:
        return path
    digest = hashlib.sha1(os.fsencode(path)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"shelfwise-warm-{digest}.sock"


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    payload = _LENGTH.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], fds)
    else:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int, head: bytes = b"") -> bytes:
    buf = bytearray(head)
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the other end closed the connection")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket, maxfds: int = 0) -> tuple[dict[str, Any], list[int]]:
    """One length-prefixed JSON message, with the file descriptors sent beside it."""
    fds: list[int] = []
    if maxfds:
        first, fds, _flags, _addr = socket.recv_fds(sock, 65536, maxfds)
        if not first:
            raise EOFError("the other end closed the connection")
        head = _recv_exact(sock, _LENGTH.size, first[: _LENGTH.size])
        rest = first[_LENGTH.size :]
    else:
        head, rest = _recv_exact(sock, _LENGTH.size), b""
    (length,) = _LENGTH.unpack(head)
    if length > _MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes is larger than {_MAX_MESSAGE}")
    return json.loads(_recv_exact(sock, length, rest)), fds


def _connect(path: str | os.PathLike[str], timeout: float | None = 5.0) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except OSError:
        sock.close()
        return None
    return sock


def ping(path: str | os.PathLike[str], timeout: float = 3.0) -> dict[str, Any] | None:
    """The server's state (``pong``, ``preloaded``, ``failed``, ``forks``, ``fork_safe``), or
    None when nothing answers on ``path``."""
    sock = _connect(path, timeout)
    if sock is None:
        return None
    with sock:
        try:
            _send(sock, {"op": "ping"})
            reply, _ = _recv(sock)
        except (OSError, EOFError, ValueError):
            return None
    return reply if reply.get("pong") else None


# --------------------------------------------------------------------------- launcher


def _cold(argv: list[str]) -> None:
    """Replace this process with the cold command (never returns)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *ENGINE, *argv])


def launch(argv: list[str]) -> int:
    """Run ``prefect.engine argv`` as a fork of the warm server; exit code of the run."""
    path = os.environ.get(SOCKET_ENV)
    sock = _connect(path) if path else None
    if sock is None:
        _cold(argv)
    assert sock is not None
    with sock:
        try:
            _send(
                sock,
                {"op": "run", "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)},
                [0, 1, 2],
            )
            reply, _ = _recv(sock)
        except (OSError, EOFError, ValueError) as exc:
            reply = {"error": f"no answer from the warm server at {path}: {exc}"}
        if "pid" not in reply:
            sys.stderr.write(f"warm start refused ({reply.get('error')}); starting cold\n")
            sock.close()
            _cold(argv)
        pid = int(reply["pid"])

        def forward(signum: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)
        sock.settimeout(None)
        try:
            final, _ = _recv(sock)
        except (OSError, EOFError, ValueError) as exc:
            sys.stderr.write(f"lost the warm server while flow run process {pid} ran: {exc}\n")
            return 1
    code = int(final.get("exit", 1))
    if code < 0:  # killed by a signal: die of the same one, as the cold process would have
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


# --------------------------------------------------------------------------- server


def preload(modules: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import each module; the ones that failed, with why, are returned beside the loaded."""
    import importlib

    loaded, failed = [], {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing extra must not stop the others
            failed[name] = f"{type(exc).__name__}: {exc}"
        else:
            loaded.append(name)
    return loaded, failed


def entrypoint_modules(prefect_yaml: Path) -> list[str]:
    """The modules of ``prefect.yaml``'s ``module.function`` entrypoints (file paths such as
    ``flows/x.py:f`` are left to the cold import)."""
    import yaml

    if not prefect_yaml.is_file():
        return []
    doc = yaml.safe_load(prefect_yaml.read_text()) or {}
    modules: list[str] = []
    for d in doc.get("deployments") or []:
        entry = str(d.get("entrypoint") or "")
        if not entry or ":" in entry or entry.endswith(".py") or "." not in entry:
            continue
        module = entry.rsplit(".", 1)[0]
        if module not in modules:
            modules.append(module)
    return modules


def _python_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t is not threading.main_thread()]


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    sys.stderr.write(f"{value}\n")
    return 1


def _run_engine(message: dict[str, Any], fds: list[int]) -> None:
    """In the forked copy: become the flow run's process and run ``prefect.engine``."""
    import atexit
    import runpy
    import traceback
    import warnings

    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(message["env"])
    os.chdir(message["cwd"])
    code = 1
    try:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()  # settings from the flow run's environment
        sys.argv = ["prefect.engine", *message["argv"]]
        with warnings.catch_warnings():  # preloaded on purpose: runpy warns that it is
            warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules")
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()  # Prefect drains its log and event queues here
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _supervise(conn: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    """In a forked copy of the server: fork the run, tell the launcher its pid, wait for it
    (stopping it if the launcher goes away) and report its exit code. Never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run_engine(message, fds)
    for fd in fds:
        os.close(fd)
    try:
        _send(conn, {"pid": pid})
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                break
            readable, _, _ = select.select([conn], [], [], 0.5)
            if readable and not conn.recv(1):  # the launcher was killed: so is its run
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
                break
    except OSError:
        pass
    os._exit(0)


def _server_logger() -> logging.Logger:
    """The server's own log lines (to its log file); the root logger is left to the flow runs,
    which configure it as a cold ``prefect.engine`` would."""
    log = logging.getLogger(__name__)
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def serve(path: Path, modules: list[str]) -> None:
    """Preload ``modules`` and fork a flow run process per launcher, until SIGTERM."""
    log = _server_logger()
    loaded, failed = preload(modules)
    for name, why in failed.items():
        log.warning("warm server could not preload %s: %s", name, why)
    threads = _python_threads()
    if threads:
        log.error("warm server has Python threads %s and will not fork; runs start cold", threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.fspath(path))
    os.chmod(path, 0o600)
    server.listen(32)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    me, forks = os.getpid(), 0
    log.info("warm server on %s: %d modules preloaded", path, len(loaded))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        while True:
            conn, _ = server.accept()
            with conn:
                try:
                    message, fds = _recv(conn, maxfds=3)
                except (OSError, EOFError, ValueError):
                    continue
                if message.get("op") == "ping":
                    _send(
                        conn,
                        {
                            "pong": True,
                            "pid": me,
                            "preloaded": loaded,
                            "failed": failed,
                            "forks": forks,
                            "fork_safe": not threads,
                        },
                    )
                    continue
                if threads or len(fds) != 3 or message.get("op") != "run":
                    _send(conn, {"error": "this warm server cannot fork (Python threads)"})
                    for fd in fds:
                        os.close(fd)
                    continue
                if os.fork() == 0:
                    server.close()
                    _supervise(conn, message, fds)
                forks += 1
                for fd in fds:
                    os.close(fd)
    finally:
        if os.getpid() == me:
            server.close()
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- worker


def launcher_command() -> list[str]:
    return [sys.executable, "-m", "shelfwise.flows.warm", "run"]


def run_worker(pool: str, name: str, limit: int) -> None:
    """The stack's process worker: Prefect's, except that a flow run without a command of its
    own (a deployment's ``command`` job variable) starts through the warm launcher."""
    import asyncio

    from prefect.utilities.processutils import command_to_string
    from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

    class WarmJobConfiguration(ProcessJobConfiguration):
        def prepare_for_flow_run(self, *args: Any, **kwargs: Any) -> None:
            super().prepare_for_flow_run(*args, **kwargs)
            if not self._command_configured:
                self.command = command_to_string(launcher_command())
                self._command_configured = True

    class WarmProcessWorker(ProcessWorker):
        job_configuration = WarmJobConfiguration

    async def work() -> None:
        async with WarmProcessWorker(work_pool_name=pool, name=name, limit=limit) as worker:
            await worker.start()

    asyncio.run(work())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shelfwise.flows.warm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run prefect.engine ARGS as a warm fork (the pool's command)")
    run.add_argument("args", nargs=argparse.REMAINDER)
    srv = sub.add_parser("serve", help="preload modules and fork flow runs on a Unix socket")
    srv.add_argument("--socket", type=Path, required=True)
    srv.add_argument("--prefect-yaml", type=Path, help="preload its entrypoints' modules too")
    srv.add_argument("modules", nargs="*")
    wrk = sub.add_parser("worker", help="a process worker whose flow runs start warm")
    wrk.add_argument("--pool", required=True)
    wrk.add_argument("--name", required=True)
    wrk.add_argument("--limit", type=int, default=None)
    pong = sub.add_parser("ping", help="print the server's state as JSON (exit 1: no server)")
    pong.add_argument("--socket", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["run"]:  # the hot path: no argparse, no imports
        return launch(raw[1:])
    args = _parser().parse_args(raw)
    if args.command == "ping":
        state = ping(args.socket)
        sys.stdout.write(json.dumps(state) + "\n")
        return 0 if state else 1
    if args.command == "worker":
        run_worker(args.pool, args.name, args.limit)
        return 0
    extra = entrypoint_modules(args.prefect_yaml) if args.prefect_yaml else []
    serve(args.socket, list(dict.fromkeys([*extra, *args.modules])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
