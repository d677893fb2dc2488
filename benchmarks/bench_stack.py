"""Local stack timings: fresh start of each server alone, the reduced demo's wall time on a
fresh state folder, a second `up` (reuse), the retrain event -> flow run latency, `down`.

    python -m benchmarks.bench_stack            # writes benchmarks/results/stack.{json,md}

The machine's load average is recorded beside the numbers: on a shared 2-core machine they
move a lot with it.
"""

from __future__ import annotations

import json
import os
import platform as pyplatform
import tempfile
import time
from pathlib import Path

import httpx

from shelfwise.configs.demo import load_demo_config
from shelfwise.configs.platform import PlatformConfig, PrefectConfig, ServingConfig, TrackingConfig
from shelfwise.configs.stack import Enabled, EvidentlyStackConfig, ServingStackConfig, StackConfig
from shelfwise.flows.demo import run_demo
from shelfwise.flows.deployments import deployment_id
from shelfwise.flows.events import emit_retrain_requested
from shelfwise.flows.stack import Component, plan_stack, stack_down, stack_up
from shelfwise.registry.server import free_port

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = Path(os.environ.get("SHELFWISE_DATA_DIR", Path(__file__).resolve().parents[1] / "data"))


def _platform(state: Path) -> PlatformConfig:
    return PlatformConfig(
        state_dir=state,
        data_dir=DATA_DIR,
        tracking=TrackingConfig(port=free_port(), startup_timeout_s=600),
        prefect=PrefectConfig(port=free_port()),
        serving=ServingConfig(port=free_port()),
    )


def _stack() -> StackConfig:
    return StackConfig(
        serving=ServingStackConfig(enabled=Enabled.never),
        evidently=EvidentlyStackConfig(enabled=Enabled.never, port=free_port()),
    )


def fresh_start(component: Component, state: Path) -> float:
    """Seconds from launch to healthy for one server alone, on an empty state folder."""
    plan = plan_stack(_platform(state), _stack(), serving=False, evidently=False)
    plan.processes = [p for p in plan.processes if p.component is component]
    try:
        (st,) = [s for s in stack_up(plan) if s.component == component]
        return float(st.startup_s)
    finally:
        stack_down(plan)


def event_latency(plan, timeout_s: float = 1800) -> dict[str, float]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = plan.prefect_api_url
    dep = deployment_id(plan.platform, "retrain-delay-risk")

    def runs() -> list[dict]:
        body = {"deployments": {"id": {"any_": [dep]}}, "limit": 10}
        return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()

    before = {r["id"] for r in runs()}
    t0 = time.monotonic()
    with temporary_settings({PREFECT_API_URL: api}):
        emit_retrain_requested("delay_risk", reason="benchmark", trigger="benchmark")
    out: dict[str, float] = {}
    while time.monotonic() - t0 < timeout_s:
        new = [r for r in runs() if r["id"] not in before]
        if new:
            run = new[0]
            out.setdefault("event_to_flow_run_created_s", round(time.monotonic() - t0, 2))
            if run["state_type"] in {"RUNNING", "COMPLETED", "FAILED", "CRASHED"}:
                out.setdefault("event_to_flow_run_running_s", round(time.monotonic() - t0, 2))
            if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED"}:
                out["event_to_flow_run_finished_s"] = round(time.monotonic() - t0, 2)
                out["final_state"] = run["state_type"]
                return out
        time.sleep(0.25)
    out["final_state"] = "TIMEOUT"
    return out


def main() -> dict:
    res: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": pyplatform.python_version(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        root = Path(tmp)
        res["mlflow_fresh_start_s"] = fresh_start(Component.mlflow, root / "a")
        res["mlflow_warm_start_s"] = fresh_start(Component.mlflow, root / "a")
        res["prefect_fresh_start_s"] = fresh_start(Component.prefect, root / "a")
        res["prefect_warm_start_s"] = fresh_start(Component.prefect, root / "a")

        platform = _platform(root / "b")
        stack = _stack()
        plan = plan_stack(platform, stack)
        try:
            t0 = time.monotonic()
            summary = run_demo(platform, stack, load_demo_config(), reduced=True, keep=True)
            res["demo_reduced_fresh_wall_s"] = round(time.monotonic() - t0, 1)
            res["demo_steps_s"] = {s.name: s.seconds for s in summary.steps}
            res["demo_stack_startup_s"] = {
                s["name"]: s["startup_s"] for s in summary.stack if s["startup_s"] is not None
            }
            t0 = time.monotonic()
            states = stack_up(plan)
            res["second_up_reuse_s"] = round(time.monotonic() - t0, 2)
            assert all(s.state in {"reused", "disabled"} for s in states), states
            res["retrain_event"] = event_latency(plan)
        finally:
            t0 = time.monotonic()
            stack_down(plan)
            res["down_s"] = round(time.monotonic() - t0, 1)
    res["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write(res)
    return res


def write(res: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stack.json").write_text(json.dumps(res, indent=2) + "\n")
    ev = res.get("retrain_event", {})
    rows = [
        ("MLflow server, fresh SQLite, to /health", res.get("mlflow_fresh_start_s")),
        ("MLflow server, existing SQLite", res.get("mlflow_warm_start_s")),
        ("Prefect server, fresh PREFECT_HOME, to /api/health", res.get("prefect_fresh_start_s")),
        ("Prefect server, existing database", res.get("prefect_warm_start_s")),
        ("`shelfwise demo --reduced`, fresh state, wall", res.get("demo_reduced_fresh_wall_s")),
        ("second `stack up` (reuses everything)", res.get("second_up_reuse_s")),
        ("retrain event -> flow run created", ev.get("event_to_flow_run_created_s")),
        ("retrain event -> flow run running (worker)", ev.get("event_to_flow_run_running_s")),
        ("retrain event -> retraining finished", ev.get("event_to_flow_run_finished_s")),
        ("`stack down`", res.get("down_s")),
    ]
    m = res["machine"]
    lines = [
        "# Local stack timings",
        "",
        f"{m['cpus']} CPUs, load average {m['loadavg_at_start']} at start, "
        f"{m.get('loadavg_at_end')} at end (a shared machine: numbers move with the load).",
        "",
        "| what | seconds |",
        "|---|---:|",
        *[f"| {k} | {v if v is not None else 'n/a'} |" for k, v in rows],
        "",
        "Demo steps (s): " + ", ".join(f"{k} {v}" for k, v in res.get("demo_steps_s", {}).items()),
        "",
    ]
    (RESULTS / "stack.md").write_text("\n".join(lines))


if __name__ == "__main__":
    from shelfwise.flows.environment import configure_logging

    configure_logging()
    print(json.dumps(main(), indent=2))
