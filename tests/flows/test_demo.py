"""`shelfwise demo --reduced` on real servers, the whole loop asserted from its summary: trained on
low-discount orders -> served -> quiet traffic raises no alarm -> shifted traffic does -> the
monitoring deployment's event starts the retraining deployment -> the gate promotes -> the
service answers with the new version. Then the faces, as a browser sees them, and a second demo
on the running stack that stops everything, leaving no process behind."""

from __future__ import annotations

import json

import psutil
import pytest

from shelfwise.configs.demo import load_demo_config
from shelfwise.configs.stack import EvidentlyStackConfig, StackConfig
from shelfwise.flows.demo import run_demo
from shelfwise.flows.stack import Component, plan_stack, stack_down, stack_status, stack_up
from shelfwise.registry.server import descendants, free_port
from tests.flows.browser import ARTIFACTS, render
from tests.flows.stack_helpers import stack_platform

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alive(pids) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def test_demo_runs_the_loop_shows_the_faces_and_runs_twice(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("SHELFWISE_API_KEY", "demo-test-key")
    platform = stack_platform(tmp_path / ".shelfwise", data_dir)
    stack_cfg = StackConfig(evidently=EvidentlyStackConfig(port=free_port()))
    demo_cfg = load_demo_config()
    plan = plan_stack(platform, stack_cfg)
    try:
        first = run_demo(platform, stack_cfg, demo_cfg, reduced=True, keep=True)
        json.dumps(first.as_dict(), default=str)  # the summary serialises
        assert [s.status for s in first.steps] == ["ok"] * len(first.steps), first.steps
        assert {r["state"] for r in first.flow_runs} == {"COMPLETED"}
        deployments = {r["deployment"] for r in first.flow_runs}
        assert {"monitor-delay-risk", "retrain-delay-risk"} <= deployments

        # monitoring: quiet in-segment traffic keeps, the shifted traffic retrains on drift
        quiet, shifted = first.monitoring
        assert quiet.labelled_rows == quiet.window_rows == 1000
        assert quiet.retrain is False and quiet.trigger is None and quiet.drift_share < 0.3
        assert shifted.retrain is True and shifted.trigger == "drift"
        assert shifted.drift_share >= 0.3

        # the loop: promoted, served, timed stage by stage
        loop = first.loop
        assert loop.promoted and loop.new_version != loop.old_version
        stages = (loop.detect_s, loop.trigger_s, loop.start_s, loop.retrain_s, loop.swap_s)
        assert loop.detect_s > 0 and loop.retrain_s > loop.gate_s > 0
        assert sum(stages) <= loop.total_s + 2.0  # stages are disjoint parts of the total

        delay = {v.version: v for v in first.versions if v.model == "delay_risk"}
        assert delay["1"].trigger == "manual" and delay["1"].decision == "promoted"
        assert delay["1"].metrics["roc_auc"] > 0.5  # inside the segment: ~0.56 (demo.yaml)
        retrained = delay[loop.new_version]
        assert retrained.trigger == "drift" and "champion" in retrained.aliases
        assert delay[loop.old_version].aliases == ["previous"]
        forecast = {v.version: v for v in first.versions if v.model == "demand_forecast"}
        assert "champion" in forecast["1"].aliases and forecast["1"].metrics["smape"] < 30
        served = next(s for s in first.steps if s.name.startswith("forecast"))
        assert "reorder point" in served.detail and f"v{1}" in served.detail

        serving_port, ev_port = platform.serving.port, stack_cfg.evidently.port
        assert first.urls == {
            "mlflow_ui": f"http://127.0.0.1:{platform.tracking.port}",
            "prefect_ui": f"http://127.0.0.1:{platform.prefect.port}",
            "service_docs": f"http://127.0.0.1:{serving_port}/",
            "evidently_ui": f"http://127.0.0.1:{ev_port}",
        }

        # the faces: each shows our objects once its scripts ran
        pages = {
            "mlflow_model": (f"{first.urls['mlflow_ui']}/#/models/delay_risk", ["champion"]),
            "prefect_deployments": (
                f"{first.urls['prefect_ui']}/deployments",
                ["train-delay-risk", "monitor-delay-risk", "retrain-delay-risk"],
            ),
            "service_docs": (
                first.urls["service_docs"],
                ["/v1/delay-risk", "/v1/delay-risk/batch", "/v1/forecast", "/v1/feedback"],
            ),
            "evidently": (first.urls["evidently_ui"], ["Shelfwise delay risk"]),
        }
        for name, (url, expected) in pages.items():
            shot = ARTIFACTS / f"{name}.png"
            dom = render(url, shot)
            missing = [e for e in expected if e not in dom]
            assert not missing, f"{url} does not show {missing} (screenshot {shot})"
            assert shot.stat().st_size > 10_000, f"{shot} looks empty"
        models_page = f"{first.urls['mlflow_ui']}/#/models"
        assert "delay_risk" in render(models_page, ARTIFACTS / "mlflow_models.png")

        # all healthy (planned again: the demo made the Evidently workspace, so the UI is part
        # of the stack now); a second `up` reuses the same processes
        plan = plan_stack(platform, stack_cfg)
        status = {s.component: s for s in stack_status(plan)}
        core = (Component.mlflow, Component.prefect, Component.worker, Component.serving)
        for c in (*core, Component.evidently, "work_pool"):
            assert status[c].state == "running", status[c]
        pids = {c: status[c].pid for c in core}
        again = {s.component: s for s in stack_up(plan)}
        for c, pid in pids.items():
            assert again[c].state == "reused" and again[c].pid == pid
        # the service's alias webhook (swaps pushed by the registry) was registered by the
        # demo's `up`; this one refreshes it in place
        assert again["push"].state == "updated", again["push"]
        tree = set(pids.values())
        for pid in pids.values():
            tree.update(descendants(pid))

        # the demo again on the running stack (training only), without --keep: then all down
        short = demo_cfg.model_copy(
            update={
                "loop": demo_cfg.loop.model_copy(update={"enabled": False}),
                "tune": demo_cfg.tune.model_copy(update={"enabled": False}),
                "forecast": demo_cfg.forecast.model_copy(update={"enabled": False}),
            }
        )
        second = run_demo(platform, stack_cfg, short, reduced=True, keep=False)
        assert [s.status for s in second.steps] == ["ok"] * len(second.steps), second.steps
        assert "already deployed" in second.steps[2].detail
        versions = [int(v.version) for v in second.versions if v.model == "delay_risk"]
        assert versions == list(range(1, int(loop.new_version) + 2))  # one more
        assert not _alive(tree), f"left running: {_alive(tree)}"
        status = {s.component: s.state for s in stack_status(plan)}
        assert status[Component.prefect] == status[Component.mlflow] == "stopped"
    finally:
        stack_down(plan)


def test_an_earlier_demos_state_is_set_aside_not_deleted(tmp_path, data_dir):
    from datetime import UTC, datetime

    from shelfwise.flows.demo import earlier_demo, set_aside_state

    platform = stack_platform(tmp_path / ".shelfwise", data_dir)
    assert not earlier_demo(platform)
    (platform.state_path / "demo").mkdir(parents=True)
    (platform.state_path / "mlflow.db").write_text("earlier registry")
    assert earlier_demo(platform)
    kept = set_aside_state(platform, StackConfig(), datetime(2026, 12, 4, 22, 40, tzinfo=UTC))
    assert kept == tmp_path / ".shelfwise.20261204-224000"
    assert (kept / "mlflow.db").read_text() == "earlier registry"
    assert not platform.state_path.exists() and not earlier_demo(platform)
