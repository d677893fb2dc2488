"""The local stack: plan from config, clear errors (port in use, a server that does not come up),
process-tree shutdown. Its whole lifecycle on real servers is in test_demo.py."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest
from typer.testing import CliRunner

from shelfwise.configs.stack import ServingStackConfig, StackConfig
from shelfwise.flows.stack import (
    Component,
    StackError,
    flow_run_env,
    plan_stack,
    stack_down,
    stack_status,
    stack_up,
)
from shelfwise.registry.server import descendants, read_pid, stop_pid
from tests.flows.stack_helpers import minimal_stack_config, stack_platform

# --------------------------------------------------------------------------- plan (no server)


def test_plan_uses_configured_ports_and_skips_external_and_absent_parts(tmp_path, data_dir):
    platform = stack_platform(tmp_path / ".shelfwise", data_dir)
    # a service module that is not installed
    absent = StackConfig(serving=ServingStackConfig(target="shelfwise.serving.no_such_service"))
    plan = plan_stack(platform, absent, root=tmp_path)
    comps = [p.component for p in plan.processes]
    assert comps == [Component.mlflow, Component.prefect, Component.warm, Component.worker]
    assert plan.process(Component.prefect).port == platform.prefect.port
    assert plan.process(Component.mlflow).port == platform.tracking.port
    assert plan.prefect_api_url == f"http://127.0.0.1:{platform.prefect.port}/api"
    assert "shelfwise.serving.no_such_service is not importable" in plan.disabled[Component.serving]
    worker = plan.process(Component.worker)
    warm = plan.process(Component.warm)
    assert worker.command[1:4] == ["-m", "shelfwise.flows.warm", "worker"]
    assert worker.command[-6:] == ["--pool", "shelfwise-process", "--name", "shelfwise-worker"] + [
        "--limit",
        "2",
    ]
    # the worker's flow runs find the warm server; it preloads prefect.yaml's entrypoints
    assert worker.env["SHELFWISE_WARM_SOCKET"] == warm.server.url
    assert warm.command[warm.command.index("--prefect-yaml") + 1] == str(tmp_path / "prefect.yaml")
    cold = plan_stack(
        platform,
        absent.model_copy(
            update={"prefect": absent.prefect.model_copy(update={"warm_starts": False})}
        ),
        root=tmp_path,
    )
    assert cold.process(Component.warm) is None and "warm_starts" in cold.disabled[Component.warm]
    assert cold.process(Component.worker).command[1:5] == ["-m", "prefect", "worker", "start"]
    assert "SHELFWISE_WARM_SOCKET" not in cold.process(Component.worker).env
    assert worker.env["SHELFWISE_PROJECT_ROOT"] == str(tmp_path.resolve())
    assert worker.env["SHELFWISE_TRACKING_URI"] == f"http://127.0.0.1:{platform.tracking.port}"

    external = stack_platform(tmp_path / ".s2", data_dir, tracking_uri="http://mlflow.example:80")
    plan = plan_stack(external, StackConfig(), root=tmp_path, serving=True)
    assert Component.mlflow not in [p.component for p in plan.processes]
    assert plan.external[Component.mlflow] == "http://mlflow.example:80"
    serving = plan.process(Component.serving)
    assert serving.port == external.serving.port and serving.server.health_path == "/readyz"
    assert flow_run_env(external, tmp_path)["SHELFWISE_TRACKING_URI"] == "http://mlflow.example:80"


def test_port_in_use_is_an_error_naming_port_and_server(tmp_path, data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        platform = stack_platform(tmp_path / ".shelfwise", data_dir, prefect_port=port)
        plan = plan_stack(platform, minimal_stack_config(), root=tmp_path)
        with pytest.raises(StackError) as err:
            stack_up(plan)
    msg = str(err.value)
    assert f"port {port}" in msg and "prefect server" in msg and "SHELFWISE_PREFECT_PORT" in msg
    assert not list((tmp_path / ".shelfwise" / "run").glob("*.pid"))  # nothing was started


def test_a_server_that_does_not_come_up_is_named_with_its_log(tmp_path, data_dir):
    platform = stack_platform(tmp_path / ".shelfwise", data_dir, tracking_uri="http://x:1")
    plan = plan_stack(platform, minimal_stack_config(), root=tmp_path)
    prefect = plan.process(Component.prefect)
    broken = dataclasses.replace(
        prefect, command=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    )
    plan.processes = [broken]
    with pytest.raises(StackError) as err:
        stack_up(plan)
    msg = str(err.value)
    assert "prefect server exited with code 3" in msg and "prefect.log" in msg and "boom" in msg
    assert read_pid(prefect.server.pid_file) is None

    # an optional part (Evidently UI, the service) that fails is reported, not fatal
    plan = plan_stack(platform, minimal_stack_config(), root=tmp_path, evidently=True)
    ui = dataclasses.replace(plan.process(Component.evidently), command=broken.command)
    plan.processes = [ui]
    (state,) = [s for s in stack_up(plan) if s.component == Component.evidently]
    assert state.state == "failed" and "exited with code 3" in state.detail


def test_a_stale_pid_file_is_neither_reused_nor_killed(tmp_path, data_dir):
    """After a reboot a pid file may name an unrelated process (here: this test's own)."""
    platform = stack_platform(tmp_path / ".shelfwise", data_dir)
    plan = plan_stack(platform, minimal_stack_config(), root=tmp_path)
    pid_file = plan.process(Component.prefect).server.pid_file
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(str(os.getpid()))
    status = {s.component: s for s in stack_status(plan)}
    assert status[Component.prefect].state == "stopped" and status[Component.prefect].pid is None
    assert not pid_file.exists()
    pid_file.write_text(str(os.getpid()))
    stack_down(plan)  # must not signal this process
    assert not pid_file.exists()


def test_cli_reports_bad_stack_config_with_file_and_key(tmp_path, monkeypatch):
    from shelfwise.flows.cli import app

    # the CLI sets PREFECT_HOME for its process; keep that out of the other tests
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("SHELFWISE_HOME", str(tmp_path / ".shelfwise"))
    bad = tmp_path / "stack.yaml"
    bad.write_text("prefect:\n  worker_limit: 0\n")
    result = CliRunner().invoke(app, ["stack", "status", "--stack", str(bad)])
    assert result.exit_code == 2
    assert "prefect.worker_limit" in result.output and "stack.yaml" in result.output


# --------------------------------------------------------------------------- real servers


def _alive(pids) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_stop_pid_also_stops_descendants_in_their_own_session():
    """A Prefect worker starts each flow run in a new session: stopping the worker's process
    group alone would orphan them. stop_pid follows descendants."""
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
        "start_new_session=True); time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not descendants(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (child,) = descendants(parent.pid)
        assert os.getsid(child) != os.getsid(parent.pid)
        stop_pid(parent.pid, timeout_s=10)
        parent.wait(timeout=10)
        assert not _alive([child])
    finally:
        if parent.poll() is None:
            parent.kill()
