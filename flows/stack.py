"""The local stack: MLflow server, Prefect server, a process work pool and its worker, and (when
present) the BentoML service and the Evidently UI, each a detached process with its log in
``<state_dir>/logs/<name>.log`` and its pid in ``<state_dir>/run/<name>.pid``.

``stack_up`` starts what is not running and reuses what is (health-checked, never slept on);
``stack_down`` stops what the stack started (whole process groups, flow runs included);
``stack_status`` reports each component. Ports come from configs/platform.yaml (env overrides).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import httpx

from shelfwise.configs.platform import PlatformConfig
from shelfwise.configs.stack import Enabled, PrefectStackConfig, StackConfig
from shelfwise.flows.environment import prefect_logging_env
from shelfwise.flows.warm import SOCKET_ENV, ping, socket_path
from shelfwise.registry.server import (
    LocalServer,
    ServerError,
    port_in_use,
    read_pid,
    start_server,
    stop_server,
)
from shelfwise.registry.tracking import (
    mlflow_server,
    mlflow_server_command,
    mlflow_server_env,
    mlflow_start_env,
    prepare_sqlite_backend,
)

logger = logging.getLogger(__name__)


class StackError(RuntimeError):
    """The stack could not be brought up (or queried). The message names the component, port,
    work pool or log file concerned."""


class Component(StrEnum):
    mlflow = "mlflow"
    prefect = "prefect"
    worker = "worker"
    warm = "warm"
    serving = "serving"
    evidently = "evidently"


# where each port is configured, for error messages
_PORT_SETTING: dict[Component, str] = {
    Component.mlflow: "tracking.port in configs/platform.yaml or SHELFWISE_MLFLOW_PORT",
    Component.prefect: "prefect.port in configs/platform.yaml or SHELFWISE_PREFECT_PORT",
    Component.serving: "serving.port in configs/platform.yaml or SHELFWISE_SERVING_PORT",
    Component.evidently: "evidently.port in configs/stack.yaml or SHELFWISE_EVIDENTLY_PORT",
}


def project_root() -> Path:
    """The project folder: where prefect.yaml lives and flow runs start (``SHELFWISE_PROJECT_ROOT``,
    else the working directory). The code itself comes from the installed ``shelfwise`` package."""
    return Path(os.environ.get("SHELFWISE_PROJECT_ROOT") or Path.cwd()).resolve()


@dataclass(frozen=True)
class ManagedProcess:
    """One process of the stack: how to start it and how to tell it is healthy."""

    component: Component
    server: LocalServer
    command: list[str]
    host: str
    port: int | None
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ui_url: str | None = None


@dataclass
class ComponentState:
    component: str
    name: str
    url: str | None
    state: str  # started | reused | external | running | stopped | unhealthy | disabled
    pid: int | None = None
    startup_s: float | None = None
    log_file: str | None = None
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PushPlan:
    """Swaps pushed by the registry: MLflow posts alias events to ``url``, signed with
    ``secret`` (the service gets the same secret in ``secret_env``)."""

    url: str
    secret_env: str
    secret_file: Path

    def secret(self) -> str:
        """From ``secret_env`` in the environment, else the state folder's (made once)."""
        from shelfwise.registry.webhooks import webhook_secret

        return os.environ.get(self.secret_env) or webhook_secret(self.secret_file)


@dataclass
class StackPlan:
    platform: PlatformConfig
    stack: StackConfig
    root: Path
    processes: list[ManagedProcess]
    tracking_uri: str
    prefect_api_url: str
    work_pool: str
    external: dict[Component, str] = field(default_factory=dict)
    disabled: dict[Component, str] = field(default_factory=dict)
    push: PushPlan | None = None  # the service's alias webhook (None: push is off)

    def process(self, component: Component) -> ManagedProcess | None:
        return next((p for p in self.processes if p.component == component), None)

    @property
    def prefect_ui_url(self) -> str:
        return self.prefect_api_url.removesuffix("/").removesuffix("/api")


# --------------------------------------------------------------------------- plan


def prefect_api_url(platform: PlatformConfig) -> str:
    if platform.prefect.api_url:
        return platform.prefect.api_url.rstrip("/")
    return f"http://{platform.prefect.host}:{platform.prefect.port}/api"


def prefect_home(platform: PlatformConfig) -> Path:
    return platform.state_path / "prefect"


def tracking_url(platform: PlatformConfig) -> str:
    return platform.tracking.uri or mlflow_server(platform).url


def prefect_client_env(platform: PlatformConfig) -> dict[str, str]:
    """Environment for any Prefect client process talking to the stack's server."""
    return {
        "PREFECT_API_URL": prefect_api_url(platform),
        "PREFECT_HOME": str(prefect_home(platform)),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def flow_run_env(platform: PlatformConfig, root: Path) -> dict[str, str]:
    """Environment of the worker and so of every flow run it starts: the same state folder,
    data, SQL store and tracking server as the stack; the code is the installed package. The
    platform's loggers go to each flow run's log in Prefect (``prefect_logging_env``)."""
    return {
        **prefect_client_env(platform),
        **prefect_logging_env(),
        "SHELFWISE_PROJECT_ROOT": str(root),
        "SHELFWISE_HOME": str(platform.state_path),
        "SHELFWISE_DATA_DIR": str(platform.data_dir.resolve()),
        "SHELFWISE_TRACKING_URI": tracking_url(platform),
        "SHELFWISE_STORE_URL": platform.store_url,
        "SHELFWISE_PREFECT_API_URL": prefect_api_url(platform),
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "GIT_PYTHON_REFRESH": "quiet",
    }


def warm_process(platform: PlatformConfig, root: Path, wk: PrefectStackConfig) -> ManagedProcess:
    """The warm-start server (flows/warm.py): the flow runs' environment, prefect.yaml's
    entrypoint modules and ``warm_preload`` imported once; healthy when it answers a ping.
    Its "url" is its Unix socket."""
    sock = socket_path(platform.state_path)
    state = platform.state_path
    server = LocalServer(
        name="warm-start server",
        url=str(sock),
        health_path="",
        pid_file=state / "run" / "warm.pid",
        log_file=state / "logs" / "warm.log",
        probe=lambda: (ping(sock) or {}).get("pong", False),
    )
    command = [sys.executable, "-m", "shelfwise.flows.warm", "serve", "--socket", str(sock)]
    command += ["--prefect-yaml", str(root / "prefect.yaml"), *wk.warm_preload]
    return ManagedProcess(
        Component.warm,
        server,
        command,
        platform.prefect.host,
        None,
        wk.warm_startup_timeout_s,
        env=flow_run_env(platform, root),
        cwd=root,
    )


def _local(platform: PlatformConfig, key: str, name: str, url: str, health: str) -> LocalServer:
    state = platform.state_path
    return LocalServer(
        name=name,
        url=url,
        health_path=health,
        pid_file=state / "run" / f"{key}.pid",
        log_file=state / "logs" / f"{key}.log",
    )


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def worker_probe(api_url: str, pool: str, worker_name: str, pid_file: Path) -> Callable[[], bool]:
    """Healthy = our worker process is alive and the server has a heartbeat from it since the
    process started (a stale worker record from an earlier run does not count)."""

    def probe() -> bool:
        if read_pid(pid_file) is None:
            return False
        started = pid_file.stat().st_mtime
        try:
            r = httpx.post(
                f"{api_url}/work_pools/{pool}/workers/filter", json={"limit": 200}, timeout=3
            )
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            return False
        for w in r.json():
            beat = w.get("last_heartbeat_time")
            if w.get("name") == worker_name and beat and _parse_time(beat) >= started - 2:
                return True
        return False

    return probe


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here (its parent packages exist and it is found)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _wanted(enabled: Enabled, present: bool, override: bool | None) -> bool:
    if override is not None:
        return override
    if enabled is Enabled.never:
        return False
    return enabled is Enabled.always or present


def plan_stack(
    platform: PlatformConfig,
    stack: StackConfig,
    root: Path | None = None,
    serving: bool | None = None,
    evidently: bool | None = None,
) -> StackPlan:
    """Decide what the stack consists of; nothing is started here."""
    root = (root or project_root()).resolve()
    state = platform.state_path
    api = prefect_api_url(platform)
    pool = platform.prefect.work_pool
    processes: list[ManagedProcess] = []
    external: dict[Component, str] = {}
    disabled: dict[Component, str] = {}

    if platform.tracking.uri:
        external[Component.mlflow] = platform.tracking.uri
    else:
        srv = mlflow_server(platform)
        processes.append(
            ManagedProcess(
                Component.mlflow,
                srv,
                [],  # built at start time (it creates the artifact folder)
                platform.tracking.host,
                platform.tracking.port,
                platform.tracking.startup_timeout_s,
                env=mlflow_server_env(),
                ui_url=srv.url,
            )
        )

    if platform.prefect.api_url:
        external[Component.prefect] = platform.prefect.api_url
    else:
        p = platform.prefect
        url = f"http://{p.host}:{p.port}"
        srv = _local(platform, "prefect", "prefect server", url, "/api/health")
        processes.append(
            ManagedProcess(
                Component.prefect,
                srv,
                [sys.executable, "-m", "prefect", "server", "start"]
                + ["--host", p.host, "--port", str(p.port), "--analytics-off"],
                p.host,
                p.port,
                stack.prefect.startup_timeout_s,
                env={
                    "PREFECT_HOME": str(prefect_home(platform)),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_UI_ENABLED": "true",
                    # the UI calls the API the server tells it; an inherited PREFECT_API_URL
                    # (another server, a test harness) would point it elsewhere
                    "PREFECT_API_URL": f"{url}/api",
                    "PREFECT_UI_API_URL": f"{url}/api",
                },
                ui_url=srv.url,
            )
        )

    wk = stack.prefect
    worker_srv = _local(platform, "worker", f"prefect worker ({wk.worker_name})", api, "")
    worker_srv = LocalServer(
        name=worker_srv.name,
        url=api,
        health_path="",
        pid_file=worker_srv.pid_file,
        log_file=worker_srv.log_file,
        probe=worker_probe(api, pool, wk.worker_name, worker_srv.pid_file),
    )
    worker_env = {
        **flow_run_env(platform, root),
        "PREFECT_WORKER_QUERY_SECONDS": f"{wk.worker_query_s:g}",
    }
    worker_args = ["--pool", pool, "--name", wk.worker_name, "--limit", str(wk.worker_limit)]
    if wk.warm_starts:
        warm = warm_process(platform, root, wk)
        processes.append(warm)
        worker_env[SOCKET_ENV] = warm.server.url
        worker_cmd = [sys.executable, "-m", "shelfwise.flows.warm", "worker", *worker_args]
    else:
        disabled[Component.warm] = "prefect.warm_starts is false in configs/stack.yaml"
        worker_cmd = [sys.executable, "-m", "prefect", "worker", "start", "--type", "process"]
        worker_cmd += worker_args
    processes.append(
        ManagedProcess(
            Component.worker,
            worker_srv,
            worker_cmd,
            platform.prefect.host,
            None,
            wk.worker_startup_timeout_s,
            env=worker_env,
            cwd=root,
        )
    )

    sv = stack.serving
    service_module = sv.target.split(":", 1)[0]
    push: PushPlan | None = None
    if _wanted(sv.enabled, importable(service_module), serving):
        s = platform.serving
        url = f"http://{s.host}:{s.port}"
        srv = _local(platform, "serving", "bentoml service", url, sv.health_path)
        push = push_plan(platform, url)
        processes.append(
            ManagedProcess(
                Component.serving,
                srv,
                [sys.executable, "-m", "bentoml", "serve", sv.target]
                + ["--host", s.host, "--port", str(s.port)],
                s.host,
                s.port,
                sv.startup_timeout_s,
                env={**flow_run_env(platform, root), "BENTOML_HOME": str(state / "bentoml")},
                cwd=root,
                ui_url=f"{srv.url}/",  # BentoML serves its Swagger UI at the root
            )
        )
    else:
        disabled[Component.serving] = (
            f"module {service_module} is not importable" if serving is None else "off"
        )

    ev = stack.evidently
    workspace = ev.workspace if ev.workspace.is_absolute() else state / ev.workspace
    if _wanted(ev.enabled, workspace.is_dir(), evidently):
        url = f"http://{ev.host}:{ev.port}"
        srv = _local(platform, "evidently", "evidently ui", url, "/api/version")
        processes.append(
            ManagedProcess(
                Component.evidently,
                srv,
                [sys.executable, "-c", "from evidently.cli import app; app()", "ui"]
                + ["--workspace", str(workspace), "--host", ev.host, "--port", str(ev.port)],
                ev.host,
                ev.port,
                ev.startup_timeout_s,
                cwd=state,
                ui_url=srv.url,
            )
        )
    else:
        disabled[Component.evidently] = f"no Evidently workspace at {workspace}"

    return StackPlan(
        platform=platform,
        stack=stack,
        root=root,
        processes=processes,
        tracking_uri=tracking_url(platform),
        prefect_api_url=api,
        work_pool=pool,
        external=external,
        disabled=disabled,
        push=push,
    )


def push_plan(platform: PlatformConfig, service_url: str) -> PushPlan | None:
    """The alias webhook of the service at ``service_url`` (configs/serving.yaml ``push``); its
    secret from the environment, else one made once in the state folder."""
    from shelfwise.configs.serving import load_serving_config

    settings = load_serving_config(os.environ.get("SHELFWISE_SERVING_CONFIG", "serving")).push
    if not settings.enabled:
        return None
    host = service_url.split("://", 1)[1]
    host = host.replace("0.0.0.0", "127.0.0.1", 1)  # MLflow posts to it: a reachable address
    return PushPlan(
        f"http://{host}{settings.route}",
        settings.secret_env,
        platform.state_path / "run" / "webhook.secret",
    )


def register_push(plan: StackPlan) -> ComponentState:
    """Register (or refresh) the service's alias webhook with the tracking server. A refusal
    is reported, not raised: the service then swaps on its poll alone."""
    assert plan.push is not None
    from mlflow import MlflowClient

    from shelfwise.configs.serving import load_serving_config
    from shelfwise.registry.webhooks import ensure_alias_webhook

    poll = load_serving_config(os.environ.get("SHELFWISE_SERVING_CONFIG", "serving"))
    try:
        client = MlflowClient(plan.tracking_uri, registry_uri=plan.tracking_uri)
        hook = ensure_alias_webhook(client, plan.push.url, plan.push.secret())
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        logger.warning(
            "the tracking server refused the alias webhook (%s: %s); the service swaps on "
            "its %gs poll only",
            type(exc).__name__,
            first,
            poll.poll_interval_s,
        )
        return ComponentState(
            "push",
            "registry push",
            plan.push.url,
            "failed",
            detail=f"{type(exc).__name__}: {first}; polling every {poll.poll_interval_s:g}s",
        )
    return ComponentState(
        "push",
        "registry push",
        plan.push.url,
        hook.state,
        detail=f"MLflow webhook {hook.webhook_id} on alias events",
    )


# --------------------------------------------------------------------------- work pool


def work_pool_exists(api_url: str, pool: str) -> bool:
    try:
        r = httpx.get(f"{api_url}/work_pools/{pool}", timeout=10)
    except httpx.HTTPError as exc:
        raise StackError(f"Prefect server at {api_url} is not reachable: {exc}") from None
    if r.status_code == 404:
        return False
    if r.status_code >= 400:
        raise StackError(
            f"Prefect server at {api_url} answered {r.status_code} for work pool {pool!r}"
        )
    return True


def ensure_work_pool(plan: StackPlan) -> bool:
    """Create the process work pool if missing (what `prefect work-pool create --type process`
    does, through the API: ~10 s faster than the CLI here). Returns True when it was created."""
    from prefect.workers.process import ProcessWorker

    api, pool = plan.prefect_api_url, plan.work_pool
    if work_pool_exists(api, pool):
        return False
    logger.info("creating process work pool %r on %s", pool, api)
    body = {
        "name": pool,
        "type": "process",
        "description": "Shelfwise flows (created by `shelfwise stack up`)",
        "base_job_template": ProcessWorker.get_default_base_job_template(),
    }
    try:
        r = httpx.post(f"{api}/work_pools/", json=body, timeout=30)
    except httpx.HTTPError as exc:
        raise StackError(f"could not create work pool {pool!r} on {api}: {exc}") from None
    if r.status_code not in (200, 201, 409) or not work_pool_exists(api, pool):
        raise StackError(
            f"could not create work pool {pool!r} on {api}: {r.status_code} {r.text[:500]}"
        )
    return True


def require_work_pool(api_url: str, pool: str) -> None:
    if not work_pool_exists(api_url, pool):
        raise StackError(
            f"work pool {pool!r} does not exist on the Prefect server at {api_url}: start the "
            f"stack (`shelfwise stack up`) or create it "
            f"(`prefect work-pool create --type process {pool}`)"
        )


# --------------------------------------------------------------------------- up / down / status

# a word of each process's command line: a pid file whose pid now belongs to something else
# (after a reboot) is stale, and that process is neither reused nor stopped
_MARKERS: dict[Component, str] = {
    Component.mlflow: "mlflow server",
    Component.prefect: "prefect server start",
    Component.worker: " worker ",  # `prefect worker start ...` or `shelfwise.flows.warm worker ...`
    Component.warm: "shelfwise.flows.warm serve",
    Component.serving: "bentoml serve",
    Component.evidently: "evidently.cli",
}


def owned_pid(p: ManagedProcess) -> int | None:
    """The pid in ``p``'s pid file if that process is alive and is ``p``'s kind of process."""
    import psutil

    pid = read_pid(p.server.pid_file)
    if pid is None:
        return None
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        cmdline = ""
    if _MARKERS[p.component] not in cmdline:
        logger.warning(
            "stale pid file %s (pid %s is not ours); ignoring it", p.server.pid_file, pid
        )
        p.server.pid_file.unlink(missing_ok=True)
        return None
    return pid


def _preflight(plan: StackPlan) -> None:
    """Before anything starts: every managed port is free or held by our own process."""
    problems = []
    for p in plan.processes:
        if p.port is None:
            continue
        if owned_pid(p) is None and port_in_use(p.host, p.port):
            problems.append(
                f"port {p.port} on {p.host} is in use by another process, so the {p.server.name} "
                f"cannot start there (change {_PORT_SETTING[p.component]})"
            )
    if problems:
        raise StackError("; ".join(problems))


def _start(plan: StackPlan, p: ManagedProcess) -> ComponentState:
    pid_before = owned_pid(p)
    if pid_before is not None and not p.server.is_up():
        # ours, alive but not answering yet (another `up` may be starting it): wait for it
        from shelfwise.registry.server import wait_healthy

        try:
            wait_healthy(p.server, p.timeout_s)
        except ServerError as exc:
            raise StackError(
                f"{p.server.name} (pid {pid_before}) is running but not healthy: {exc}\n"
                f"stop it with `shelfwise stack down`"
            ) from None
    if p.server.is_up():
        return ComponentState(
            p.component,
            p.server.name,
            p.ui_url or p.server.url,
            "reused",
            pid=read_pid(p.server.pid_file),
            log_file=str(p.server.log_file),
        )
    command = p.command or mlflow_server_command(plan.platform)
    t0 = time.monotonic()
    env = p.env
    if p.component is Component.mlflow:
        prepare_sqlite_backend(plan.platform.mlflow_backend_store_uri)
        env = mlflow_start_env(plan.platform, env)
    if p.component is Component.serving and plan.push is not None:
        env = {**env, plan.push.secret_env: plan.push.secret()}
    try:
        pid = start_server(p.server, command, p.host, p.port, p.timeout_s, env=env, cwd=p.cwd)
    except ServerError as exc:
        raise StackError(str(exc)) from None
    return ComponentState(
        p.component,
        p.server.name,
        p.ui_url or p.server.url,
        "started",
        pid=pid,
        startup_s=round(time.monotonic() - t0, 2),
        log_file=str(p.server.log_file),
    )


# start order: each wave's processes start together and are waited on together (on 2 cores the
# MLflow and Prefect servers' imports and migrations overlap); a wave needs the earlier ones.
_WAVES: list[set[Component]] = [
    # the warm server needs nothing; its imports overlap the servers' start-up
    {Component.mlflow, Component.prefect, Component.evidently, Component.warm},
    {Component.worker},  # needs the Prefect server (and its work pool)
    {Component.serving},  # needs the tracking server
]


# the platform's core: if one of these does not come up, `up` fails and stops what it started.
# The others (the service needs a @champion, the UI a workspace) are reported as failed instead.
CORE: frozenset[Component] = frozenset({Component.mlflow, Component.prefect, Component.worker})


def stack_up(plan: StackPlan, only: set[Component] | None = None) -> list[ComponentState]:
    """Start (or reuse) every component (or ``only`` those), wave by wave. A core component
    that fails stops what this call started and raises; an optional one is reported as
    ``failed`` with its error."""
    from concurrent.futures import ThreadPoolExecutor

    plan.platform.state_path.mkdir(parents=True, exist_ok=True)
    _preflight(plan)
    states: list[ComponentState] = [
        ComponentState(c, c.value, url, "external") for c, url in plan.external.items()
    ]
    started: list[ManagedProcess] = []
    try:
        for wave in _WAVES:
            procs = [
                p
                for p in plan.processes
                if p.component in wave and (only is None or p.component in only)
            ]
            if not procs:
                continue
            if any(p.component is Component.worker for p in procs):
                created = ensure_work_pool(plan)
                states.append(
                    ComponentState(
                        "work_pool",
                        f"work pool {plan.work_pool}",
                        f"{plan.prefect_ui_url}/work-pools/work-pool/{plan.work_pool}",
                        "created" if created else "reused",
                    )
                )
            with ThreadPoolExecutor(max_workers=len(procs)) as pool:
                futures = [(p, pool.submit(_start, plan, p)) for p in procs]
            errors = []
            for p, fut in futures:
                exc = fut.exception()
                if exc is not None and p.component in CORE:
                    errors.append(exc)
                    continue
                if exc is not None:
                    logger.error("%s did not come up: %s", p.server.name, exc)
                    states.append(
                        ComponentState(
                            p.component,
                            p.server.name,
                            p.ui_url or p.server.url,
                            "failed",
                            log_file=str(p.server.log_file),
                            detail=str(exc),
                        )
                    )
                    continue
                state = fut.result()
                if state.state == "started":
                    started.append(p)
                logger.info("%s %s (%s)", state.name, state.state, state.url)
                states.append(state)
            if errors:
                raise errors[0]
            serving_up = any(
                st.component == Component.serving and st.state in ("started", "reused")
                for st in states
            )
            if Component.serving in wave and serving_up and plan.push is not None:
                states.append(register_push(plan))
    except BaseException:
        for p in reversed(started):
            stop_server(p.server)
        raise
    if only is None:
        for c, why in plan.disabled.items():
            states.append(ComponentState(c, c.value, None, "disabled", detail=why))
    return states


def stack_down(plan: StackPlan) -> list[ComponentState]:
    """Stop every component this stack started (by pid file), last started first. Components
    of a larger plan (e.g. serving) are stopped even if this plan would not start them."""
    states = []
    keys = [p.component for p in plan.processes]
    full = plan_stack(plan.platform, plan.stack, plan.root, serving=True, evidently=True)
    for p in reversed(full.processes):
        pid = owned_pid(p)
        stopped = stop_server(p.server) if pid is not None else False
        if stopped or p.component in keys:
            states.append(
                ComponentState(
                    p.component, p.server.name, None, "stopped" if stopped else "not running", pid
                )
            )
    return states


def stack_status(plan: StackPlan) -> list[ComponentState]:
    states = [ComponentState(c, c.value, url, "external") for c, url in plan.external.items()]
    for p in plan.processes:
        pid = owned_pid(p)
        up = p.server.is_up()
        if up:
            state = "running"
        elif pid is not None:
            state = "unhealthy"
        else:
            state = "stopped"
        states.append(
            ComponentState(
                p.component,
                p.server.name,
                p.ui_url or p.server.url,
                state,
                pid=pid,
                log_file=str(p.server.log_file),
            )
        )
        if p.component is Component.prefect and up:
            try:
                exists = work_pool_exists(plan.prefect_api_url, plan.work_pool)
            except StackError as exc:
                exists, detail = False, str(exc)
            else:
                detail = "" if exists else f"work pool {plan.work_pool!r} missing"
            states.append(
                ComponentState(
                    "work_pool",
                    f"work pool {plan.work_pool}",
                    f"{plan.prefect_ui_url}/work-pools/work-pool/{plan.work_pool}",
                    "running" if exists else "missing",
                    detail=detail,
                )
            )
    for c, why in plan.disabled.items():
        states.append(ComponentState(c, c.value, None, "disabled", detail=why))
    return states


def stack_urls(plan: StackPlan) -> dict[str, str]:
    """The faces of the platform: MLflow UI, Prefect UI, service docs, Evidently UI."""
    serving = plan.process(Component.serving)
    evidently = plan.process(Component.evidently)
    return {
        "mlflow_ui": plan.tracking_uri,
        "prefect_ui": plan.prefect_ui_url,
        "service_docs": (
            serving.ui_url
            if serving and serving.server.is_up()
            else f"(not running: {plan.disabled.get(Component.serving, 'service not started')})"
        ),
        "evidently_ui": (
            evidently.server.url
            if evidently and evidently.server.is_up()
            else f"(not running: {plan.disabled.get(Component.evidently, 'ui not started')})"
        ),
    }
