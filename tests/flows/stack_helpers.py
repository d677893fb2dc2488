"""Helpers shared by the stack, deployment and demo tests: a platform on free ports in a tmp
folder, a reduced delay-risk config, waiting on Prefect flow runs."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import yaml

from shelfwise.configs.platform import PlatformConfig, PrefectConfig, ServingConfig, TrackingConfig
from shelfwise.configs.stack import Enabled, EvidentlyStackConfig, ServingStackConfig, StackConfig
from shelfwise.registry.server import free_port


def stack_platform(
    state_dir: Path,
    data_dir: Path,
    tracking_uri: str | None = None,
    work_pool: str = "shelfwise-process",
    prefect_port: int | None = None,
) -> PlatformConfig:
    return PlatformConfig(
        state_dir=state_dir,
        data_dir=data_dir,
        tracking=TrackingConfig(uri=tracking_uri, port=free_port(), startup_timeout_s=300),
        prefect=PrefectConfig(port=prefect_port or free_port(), work_pool=work_pool),
        serving=ServingConfig(port=free_port()),
    )


def minimal_stack_config() -> StackConfig:
    """MLflow + Prefect server + worker only (serving and Evidently belong to other tests)."""
    return StackConfig(
        serving=ServingStackConfig(enabled=Enabled.never),
        evidently=EvidentlyStackConfig(enabled=Enabled.never, port=free_port()),
    )


REDUCED_TRAINING = {
    "split": {"cv_folds": 2},
    "xgboost": {"n_estimators": 60},
    "reference_sample_size": 300,
}


def reduced_task(path: Path, task: str = "delay_risk", **overrides: dict) -> Path:
    """A shipped classification task, self-contained, with 2 CV folds and fewer trees (CI
    size) and ``overrides`` merged over its declaration; written to ``path``."""
    from shelfwise.configs.tasks import load_task, materialise

    raw = materialise(load_task(task), {"training": REDUCED_TRAINING}, overrides)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def flow_runs(api: str, deployment_id: str) -> list[dict]:
    r = httpx.post(
        f"{api}/flow_runs/filter",
        json={"deployments": {"id": {"any_": [deployment_id]}}, "limit": 50},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()


def all_flow_runs(api: str) -> list[dict]:
    r = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=10)
    r.raise_for_status()
    return r.json()


def log_messages(api: str, flow_run_ids: list[str]) -> list[str]:
    """Messages the Prefect API holds for these flow runs (shipped in batches: poll with
    ``wait_for``)."""
    body = {"logs": {"flow_run_id": {"any_": flow_run_ids}}, "limit": 200}
    r = httpx.post(f"{api}/logs/filter", json=body, timeout=10)
    r.raise_for_status()
    return [log["message"] for log in r.json()]


def wait_for(predicate, timeout_s: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
