"""prefect.yaml from configuration, and `prefect deploy` against the stack's Prefect server.

configs/deployments.yaml (schedules, triggers, parameters) + configs/platform.yaml (work pool) are
rendered into prefect.yaml: the committed file is the rendering of the shipped configs, so plain
`prefect deploy --all` works from the repo root, and `shelfwise deploy` re-renders it from the
current configs first. Flow runs start in the project root through a pull step reading
``$SHELFWISE_PROJECT_ROOT`` at run time (set by `shelfwise stack up` for its worker).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from shelfwise.configs.deployments import DeploymentConfig, DeploymentsConfig
from shelfwise.configs.platform import PlatformConfig
from shelfwise.flows.stack import (
    StackError,
    importable,
    prefect_api_url,
    prefect_client_env,
    require_work_pool,
)

logger = logging.getLogger(__name__)

HEADER = """\
# GENERATED from configs/deployments.yaml and configs/platform.yaml (prefect.work_pool) by
# `shelfwise deploy` (flows/deployments.py): edit those files, not this one.
# `prefect deploy --all` works from the repo root against the Prefect server in PREFECT_API_URL
# (`shelfwise stack up` starts one, with the work pool and a worker that sets
# SHELFWISE_PROJECT_ROOT).
"""


class DeployError(RuntimeError):
    """`prefect deploy` failed; the message names the deployment(s) and carries Prefect's output."""


def _schedules(d: DeploymentConfig, cfg: DeploymentsConfig) -> list[dict[str, Any]]:
    tz, active = cfg.timezone, cfg.schedules_active
    if d.cron:
        return [{"cron": d.cron, "timezone": tz, "active": active}]
    if d.interval_s:
        interval: int | float = int(d.interval_s) if d.interval_s.is_integer() else d.interval_s
        return [{"interval": interval, "timezone": tz, "active": active}]
    return []


def _triggers(d: DeploymentConfig) -> list[dict[str, Any]]:
    return [
        {
            "type": "event",
            "enabled": t.enabled,
            "match": dict(t.match),
            "expect": [t.event],
            "parameters": dict(t.parameters),
        }
        for t in d.triggers
    ]


def render_deployment(d: DeploymentConfig, cfg: DeploymentsConfig, work_pool: str) -> dict:
    out: dict[str, Any] = {
        "name": d.name,
        "entrypoint": d.entrypoint,
        "description": d.description or None,
        "tags": list(d.tags),
        "parameters": dict(d.parameters),
        "work_pool": {"name": work_pool, "work_queue_name": None, "job_variables": {}},
        "schedules": _schedules(d, cfg),
    }
    if d.concurrency_limit is not None:
        out["concurrency_limit"] = d.concurrency_limit
    if d.triggers:
        out["triggers"] = _triggers(d)
    return out


def render_prefect_yaml(cfg: DeploymentsConfig, platform: PlatformConfig) -> dict:
    """The prefect.yaml document for ``cfg`` with the platform's work pool."""
    from importlib.metadata import version

    return {
        "name": cfg.project,
        "prefect-version": version("prefect"),
        "build": None,
        "push": None,
        "pull": [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": "{{ $" + cfg.project_root_env + " }}"
                }
            }
        ],
        "deployments": [
            render_deployment(d, cfg, platform.prefect.work_pool) for d in cfg.deployments
        ],
    }


def dump_prefect_yaml(doc: dict) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def write_prefect_yaml(path: Path, cfg: DeploymentsConfig, platform: PlatformConfig) -> bool:
    """Write the rendering to ``path``; returns True when the file changed."""
    text = dump_prefect_yaml(render_prefect_yaml(cfg, platform))
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    logger.info("wrote %s", path)
    return True


@dataclass
class DeployResult:
    deployed: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why
    prefect_file: str = ""
    output: str = ""
    unchanged: bool = False


def deployable(cfg: DeploymentsConfig) -> tuple[list[str], dict[str, str]]:
    """Deployments whose flow module is importable here, and the others with the reason."""
    ok, skipped = [], {}
    for d in cfg.deployments:
        if importable(d.entrypoint_module):
            ok.append(d.name)
        else:
            skipped[d.name] = f"module {d.entrypoint_module} is not importable"
    return ok, skipped


def deploy(
    cfg: DeploymentsConfig,
    platform: PlatformConfig,
    root: Path,
    prefect_file: Path | None = None,
    names: list[str] | None = None,
    timeout_s: float = 600,
    skip_unchanged: bool = False,
) -> DeployResult:
    """Render prefect.yaml and run `prefect deploy` for the deployments whose flow exists here
    (or ``names``), from ``root`` against the platform's Prefect server.

    ``skip_unchanged``: do nothing when the same rendering was deployed to the same server
    before and its deployments are still there (a second `shelfwise demo` saves ~20 s)."""
    prefect_file = prefect_file or root / "prefect.yaml"
    write_prefect_yaml(prefect_file, cfg, platform)
    available, skipped = deployable(cfg)
    if names:
        unknown = [n for n in names if n not in {d.name for d in cfg.deployments}]
        if unknown:
            raise DeployError(
                f"unknown deployment(s) {unknown}; configs/deployments.yaml has "
                f"{[d.name for d in cfg.deployments]}"
            )
        missing = [n for n in names if n in skipped]
        if missing:
            raise DeployError("; ".join(f"{n}: {skipped[n]}" for n in missing))
        selected = list(names)
    else:
        selected = available
    for name, why in skipped.items():
        if name not in selected:
            logger.warning("not deploying %s: %s", name, why)
    api = prefect_api_url(platform)
    require_work_pool(api, platform.prefect.work_pool)
    if not selected:
        return DeployResult([], skipped, str(prefect_file))
    marker = platform.state_path / "prefect" / "last_deploy.json"
    fingerprint = _deploy_fingerprint(prefect_file, selected, api, root)
    if skip_unchanged and _still_deployed(marker, fingerprint, platform, selected):
        logger.info("deployments %s unchanged since the last deploy", ", ".join(selected))
        return DeployResult(selected, skipped, str(prefect_file), "unchanged", unchanged=True)
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
    cmd += ["--prefect-file", str(prefect_file)]
    if names is None and not skipped:
        cmd += ["--all"]  # every deployment of prefect.yaml has its flow here
    else:
        for n in selected:
            cmd += ["--name", n]
    env = {**os.environ, **prefect_client_env(platform)}
    logger.info("deploying %s to %s", ", ".join(selected), api)
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise DeployError(
            f"`prefect deploy` of {', '.join(selected)} failed (exit {proc.returncode}):\n"
            f"{output[-3000:]}"
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fingerprint, "names": selected}))
    return DeployResult(selected, skipped, str(prefect_file), output)


def _deploy_fingerprint(prefect_file: Path, names: list[str], api: str, root: Path) -> str:
    h = hashlib.sha256(prefect_file.read_bytes())
    h.update(json.dumps([sorted(names), api, str(root)]).encode())
    return h.hexdigest()


def _still_deployed(
    marker: Path, fingerprint: str, platform: PlatformConfig, names: list[str]
) -> bool:
    try:
        last = json.loads(marker.read_text())
    except (FileNotFoundError, ValueError):
        return False
    if last.get("fingerprint") != fingerprint:
        return False
    on_server = {d["name"] for d in read_deployments(platform)}
    return set(names) <= on_server


def read_deployments(platform: PlatformConfig) -> list[dict]:
    """Deployments on the server (name, flow, schedules, paused), for status and tests."""
    api = prefect_api_url(platform)
    try:
        r = httpx.post(f"{api}/deployments/filter", json={"limit": 200}, timeout=10)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise StackError(f"cannot list deployments on {api}: {exc}") from None
    return r.json()


def deployment_id(platform: PlatformConfig, name: str) -> str:
    """The id of the deployment called ``name`` on the platform's Prefect server."""
    api = prefect_api_url(platform)
    r = httpx.post(
        f"{api}/deployments/filter",
        json={"deployments": {"name": {"any_": [name]}}, "limit": 2},
        timeout=10,
    )
    r.raise_for_status()
    found = r.json()
    if not found:
        raise DeployError(f"deployment {name!r} not found on {api}: run `shelfwise deploy`")
    return found[0]["id"]


@dataclass
class FlowRunOutcome:
    id: str
    name: str
    state: str
    message: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"


@dataclass(frozen=True)
class StartedRun:
    """A flow run of a deployment, created for the stack's worker and not waited for yet."""

    id: str
    name: str
    deployment: str
    started: float  # time.monotonic() when it was created


def start_deployment_run(
    platform: PlatformConfig, name: str, parameters: dict[str, Any]
) -> StartedRun:
    """Create a run of deployment ``name`` for the stack's worker and return at once."""
    import time

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    dep_id = deployment_id(platform, name)
    t0 = time.monotonic()
    with temporary_settings({PREFECT_API_URL: prefect_api_url(platform)}):
        run = run_deployment(dep_id, parameters=parameters, timeout=0)
    return StartedRun(str(run.id), run.name, name, t0)


def wait_for_run(
    platform: PlatformConfig, run: StartedRun, timeout_s: float, poll_s: float = 1.0
) -> FlowRunOutcome:
    """Wait until ``run`` is final (or ``timeout_s`` passed) and say how it ended."""
    import time

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = run.started + timeout_s
    with (
        temporary_settings({PREFECT_API_URL: prefect_api_url(platform)}),
        get_client(sync_client=True) as client,
    ):
        while True:
            flow_run = client.read_flow_run(run.id)
            state = flow_run.state
            if (state and state.is_final()) or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
    return FlowRunOutcome(
        id=run.id,
        name=run.name,
        state=state.type.value if state else "UNKNOWN",
        message=(state.message or "") if state else "",
        seconds=round(time.monotonic() - run.started, 1),
    )


def run_deployment_and_wait(
    platform: PlatformConfig, name: str, parameters: dict[str, Any], timeout_s: float
) -> FlowRunOutcome:
    """Start a run of deployment ``name`` (executed by the stack's worker) and wait for it."""
    return wait_for_run(platform, start_deployment_run(platform, name, parameters), timeout_s)
