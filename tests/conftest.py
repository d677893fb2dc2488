"""Shared fixtures: real data paths, a real `mlflow server` subprocess, PostgreSQL databases."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SHELFWISE_DATA_DIR", REPO_ROOT / "data")).resolve()
PG_ADMIN_URL = os.environ.get("SHELFWISE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

os.environ.setdefault("SHELFWISE_DATA_DIR", str(DATA_DIR))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# an ephemeral Prefect API started by a CLI test may take longer than Prefect's default 20 s on
# a loaded 2-core machine (two test workers)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ["COLUMNS"] = "240"  # rich wraps CLI output at the terminal width (80 without a tty)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# The longest single tests, measured (`make test PYTEST_ARGS=--durations=25`): the demo alone is
# about a third of the suite. `--dist loadfile` hands files to the two workers in collection
# order (the Makefile turns off xdist's reordering by test count, which put the one-test demo
# last), so these start at once and the rest fills the other worker.
LONGEST_FIRST = ("tests/flows/test_demo.py",)


def _schedule_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    if path in LONGEST_FIRST:
        return LONGEST_FIRST.index(path)
    # unit files next: the demo's worker queues the next file behind it, best a short one;
    # then the server-backed files
    return len(LONGEST_FIRST) + (0 if item.get_closest_marker("integration") is None else 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_schedule_rank)  # stable: each file keeps its own order


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"demo data not found at {DATA_DIR} (set SHELFWISE_DATA_DIR)")
    return DATA_DIR


def _platform(state_dir: Path, port: int, backend: str | None = None):
    from shelfwise.configs.platform import PlatformConfig, TrackingConfig

    return PlatformConfig(
        state_dir=state_dir,
        data_dir=DATA_DIR,
        tracking=TrackingConfig(port=port, backend_store_uri=backend, startup_timeout_s=180),
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on SQLite with a local artifact root, for the whole session."""
    from shelfwise.registry.server import free_port
    from shelfwise.registry.tracking import ensure_tracking_uri, stop_tracking_server

    state = tmp_path_factory.mktemp("mlflow-sqlite")
    platform = _platform(state, free_port())
    uri = ensure_tracking_uri(platform)
    yield uri
    stop_tracking_server(platform)


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database created for the test and dropped after it; yields its URL."""
    import psycopg

    if not pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    name = f"shelfwise_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def platform_factory(tmp_path: Path):
    """Build a PlatformConfig rooted in the test's tmp dir (state, data dir = shared data)."""

    def make(port: int | None = None, backend: str | None = None, **kw):
        from shelfwise.registry.server import free_port

        return _platform(tmp_path / ".shelfwise", port or free_port(), backend)

    return make


@pytest.fixture
def python_exe() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def prefect_harness():
    """An in-process Prefect API for flow tests (the real server is exercised in tests/flows)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real `prefect server` for the session's subprocesses and in-process flows (an
    ephemeral API per process costs each process the server start-up; on a busy machine over a
    minute). Yields its API URL."""
    from shelfwise.registry.server import LocalServer, free_port, start_server, stop_server

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    server = LocalServer(
        "prefect server",
        f"http://127.0.0.1:{port}",
        "/api/health",
        home / "prefect.pid",
        home / "prefect.log",
    )
    start_server(
        server,
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port), "--no-ui"],
        "127.0.0.1",
        port,
        timeout_s=600,
        env={"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    )
    yield f"{server.url}/api"
    stop_server(server)


@pytest.fixture
def delay_config(tmp_path: Path):
    """A delay-risk config YAML with a unique registered model + experiment name."""

    def make(**overrides) -> Path:
        import yaml

        from shelfwise.configs.loader import configs_dir, read_yaml

        raw = read_yaml(configs_dir() / "delay_risk.yaml")
        name = f"delay_risk_{uuid.uuid4().hex[:8]}"
        raw.update({"registered_model_name": name, "experiment": name})
        for key, value in overrides.items():
            raw[key] = value
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(raw))
        return p

    return make


FAST_TRAINING = {"split": {"cv_folds": 3}, "random_forest": {"n_estimators": 120}}


@pytest.fixture
def task_file(tmp_path: Path):
    """``task_file(task="delay_risk", fast=True, **keys)`` -> the path of a shipped task's
    declaration, self-contained (referenced sections read in), with a unique registered model +
    experiment and ``keys`` deep-merged over it; ``fast`` (tabular kinds) uses 3 CV folds and a
    smaller forest (the flow tests' budget on a shared 2-core machine)."""

    def make(task: str = "delay_risk", fast: bool = True, **overrides) -> Path:
        import yaml

        from shelfwise.configs.tasks import TaskKind, load_task, materialise

        declaration = load_task(task)
        name = f"{task}_{uuid.uuid4().hex[:8]}"
        quick = fast and declaration.kind is not TaskKind.forecast
        layers = [
            {"model_name": name, "experiment": name},
            {"training": FAST_TRAINING} if quick else {},
        ]
        raw = materialise(declaration, *layers, overrides)
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(raw, sort_keys=False))
        return p

    return make


@dataclass(frozen=True)
class WheelVenv:
    """A fresh virtualenv outside the checkout with only the built Shelfwise wheel installed."""

    wheel: Path
    python: Path
    bin: Path
    outside: Path  # a working directory outside the checkout


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> WheelVenv:
    """Build the wheel into dist/ (where bentofile.yaml expects it) and install it, with the
    pinned dependencies of requirements.lock, into a new venv in a tmp folder."""
    import subprocess

    uv = Path(sys.executable).parent / "uv"
    root = tmp_path_factory.mktemp("wheel-venv")
    built = root / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", built, "-q", REPO_ROOT], check=True, timeout=300
    )
    (fresh,) = built.glob("shelfwise-*.whl")
    # into dist/ by an atomic rename, so that test workers building at once never see half a file
    dist = REPO_ROOT / "dist"
    dist.mkdir(exist_ok=True)
    staged = dist / f".{fresh.name}.{os.getpid()}"
    shutil.copyfile(fresh, staged)
    wheel = dist / fresh.name
    os.replace(staged, wheel)
    venv = root / "venv"
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    subprocess.run([uv, "venv", "-q", "--python", "3.11", venv], check=True, env=clean)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", venv / "bin" / "python"]
        + ["-c", REPO_ROOT / "requirements.lock", wheel],
        check=True,
        env=clean,
        timeout=900,
    )
    outside = root / "elsewhere"
    outside.mkdir()
    return WheelVenv(wheel, venv / "bin" / "python", venv / "bin", outside)
