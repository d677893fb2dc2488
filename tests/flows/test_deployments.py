"""prefect.yaml from configs, and deployments on a real Prefect server: schedules, the retrain
trigger on the monitoring event (run by a real process worker, registering a real version in a
real MLflow server), a failed run visible as failed with its error, a missing work pool named."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import yaml

from shelfwise.configs.deployments import (
    DeploymentConfig,
    DeploymentsConfig,
    load_deployments_config,
)
from shelfwise.configs.loader import ConfigError, load_config
from shelfwise.configs.platform import load_platform_config
from shelfwise.flows.deployments import (
    DeployError,
    deploy,
    deployment_id,
    dump_prefect_yaml,
    read_deployments,
    render_prefect_yaml,
    run_deployment_and_wait,
)
from shelfwise.flows.events import emit_retrain_requested
from shelfwise.flows.stack import (
    Component,
    StackError,
    plan_stack,
    project_root,
    stack_down,
    stack_up,
)
from shelfwise.flows.warm import ping
from tests.flows.stack_helpers import (
    all_flow_runs,
    flow_runs,
    log_messages,
    minimal_stack_config,
    reduced_task,
    stack_platform,
    wait_for,
)

RETRAIN = "retrain-delay-risk"
NIGHTLY = "train-delay-risk"
EVENT = "shelfwise.retrain.requested"


# --------------------------------------------------------------------------- rendering (no server)


def test_committed_prefect_yaml_is_the_rendering_of_the_shipped_configs():
    expected = dump_prefect_yaml(
        render_prefect_yaml(load_deployments_config(), load_platform_config())
    )
    committed = (project_root() / "prefect.yaml").read_text(encoding="utf-8")
    assert committed == expected, "run `shelfwise deploy --render-only` and commit prefect.yaml"


def test_rendering_carries_schedules_trigger_pull_step_and_work_pool(tmp_path, data_dir):
    platform = stack_platform(tmp_path, data_dir, work_pool="pool-from-config")
    doc = render_prefect_yaml(load_deployments_config(), platform)
    by_name = {d["name"]: d for d in doc["deployments"]}
    # every declared task gets its deployments, named for the step and the task
    assert {
        NIGHTLY,
        "tune-delay-risk",
        "train-demand-forecast",
        "train-walmart-weekly",
        "retrain-walmart-weekly",
        RETRAIN,
        "monitor-delay-risk",
    } <= set(by_name)
    assert "tune-demand-forecast" not in by_name  # tuning is for tabular kinds
    assert by_name[NIGHTLY]["parameters"] == {"task": "delay_risk", "trigger": "schedule"}
    assert by_name[NIGHTLY]["entrypoint"] == by_name["train-delay-risk"]["entrypoint"]
    assert by_name["train-demand-forecast"]["entrypoint"].endswith(".train_forecast")
    assert all(d["work_pool"]["name"] == "pool-from-config" for d in doc["deployments"])
    assert by_name[NIGHTLY]["schedules"][0]["cron"] == "0 2 * * *"
    assert by_name["monitor-delay-risk"]["schedules"][0]["interval"] == 300
    (trigger,) = by_name[RETRAIN]["triggers"]
    assert trigger["expect"] == [EVENT]
    assert trigger["match"] == {"prefect.resource.id": "shelfwise.model.delay_risk"}
    assert trigger["parameters"] == {
        "model": "{{ event.payload.model }}",
        "trigger": "{{ event.payload.trigger }}",
        "reason": "{{ event.payload.reason }}",
        "task": "{{ event.payload.task }}",
    }
    forecast_trigger = by_name["retrain-walmart-weekly"]["triggers"][0]
    assert forecast_trigger["match"] == {"prefect.resource.id": "shelfwise.model.walmart_weekly"}
    assert forecast_trigger["parameters"]["actuals"] == "{{ event.payload.actuals }}"
    # a forecast's scheduled monitoring scores the store's ingested actuals: no file parameter
    assert by_name["monitor-walmart-weekly"]["parameters"] == {"task": "walmart_weekly"}
    step = doc["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "{{ $SHELFWISE_PROJECT_ROOT }}"
    # the YAML round-trips (templates are quoted, not parsed as flow mappings)
    assert yaml.safe_load(dump_prefect_yaml(doc)) == doc


def test_online_compare_and_alarm_check_are_deployed_for_the_tasks_that_declare_them():
    import importlib

    from shelfwise.configs.deployments import task_deployments
    from shelfwise.configs.tasks import load_task

    plain = load_task("delay_risk")
    assert not plain.alarms.enabled and not plain.serving.challenger.shadow
    names = {d.name for d in task_deployments(plain, EVENT)}
    assert not any(n.startswith(("online-compare-", "alarm-check-")) for n in names)
    online = plain.model_copy(
        update={
            "alarms": plain.alarms.model_copy(update={"enabled": True}),
            "serving": plain.serving.model_copy(
                update={"challenger": plain.serving.challenger.model_copy(update={"shadow": True})}
            ),
            "schedules": plain.schedules.model_copy(update={"alarm_check_interval_s": 30}),
        }
    )
    by = {d.name: d for d in task_deployments(online, EVENT)}
    compare, alarm = by["online-compare-delay-risk"], by["alarm-check-delay-risk"]
    assert compare.interval_s == 3600 and alarm.interval_s == 30
    assert compare.parameters == alarm.parameters == {"task": "delay_risk"}
    assert alarm.concurrency_limit == 1  # two checks must not both roll back
    for d, flow_name in ((compare, "online-compare"), (alarm, "alarm-check")):
        module, attr = d.entrypoint.rsplit(".", 1)
        assert getattr(importlib.import_module(module), attr).name == flow_name


def test_retrain_trigger_matches_what_emit_retrain_requested_sends():
    from shelfwise.flows.events import RETRAIN_REQUESTED, model_resource, retrain_payload

    (trigger,) = load_deployments_config().get(RETRAIN).triggers
    assert trigger.event == RETRAIN_REQUESTED
    resource = model_resource("delay_risk")
    assert all(resource.get(k) == v for k, v in trigger.match.items())
    payload = retrain_payload("delay_risk", "drift", "drift", task="delay_risk")
    for template in trigger.parameters.values():  # every payload field a template reads exists
        field = template.strip("{} ").removeprefix("event.payload.")
        assert field in payload


@pytest.mark.parametrize(
    ("deployment", "key"),
    [
        ({"name": "x", "entrypoint": "pkg.flows.x.f", "cron": "0 2 * *"}, "deployments.0.cron"),
        ({"name": "Bad Name", "entrypoint": "pkg.flows.x.f"}, "deployments.0.name"),
        ({"name": "x", "entrypoint": "flows/x.py:f"}, "deployments.0.entrypoint"),
        (
            {"name": "x", "entrypoint": "pkg.flows.x.f", "cron": "0 2 * * *", "interval_s": 60},
            "deployments.0",
        ),
    ],
)
def test_bad_deployment_config_names_file_and_key(tmp_path, deployment, key):
    path = tmp_path / "deployments.yaml"
    path.write_text(yaml.safe_dump({"deployments": [deployment]}))
    with pytest.raises(ConfigError) as err:
        load_config(path, DeploymentsConfig)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


# --------------------------------------------------------------------------- real Prefect server


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, mlflow_server, data_dir):
    """A real Prefect server + process worker (tracking: the session's real MLflow server) with
    the deployments of this checkout, the retrain deployment defaulting to a reduced task."""
    tmp = tmp_path_factory.mktemp("prefect-deployments")
    platform = stack_platform(tmp / ".shelfwise", data_dir, tracking_uri=mlflow_server)
    plan = plan_stack(platform, minimal_stack_config(), serving=False, evidently=False)
    cfg = load_deployments_config()
    reduced = str(reduced_task(tmp / "delay_risk.yaml"))
    cfg = cfg.model_copy(
        update={
            "schedules_active": False,  # no scheduled run may start during the tests
            "deployments": [
                d.model_copy(update={"parameters": {**d.parameters, "task": reduced}})
                if d.name == RETRAIN
                else d
                for d in cfg.deployments
            ],
        }
    )
    try:
        stack_up(plan)
        result = deploy(cfg, platform, project_root(), prefect_file=tmp / "prefect.yaml")
        yield platform, plan, result, reduced
    finally:
        stack_down(plan)


@pytest.mark.integration
def test_deploy_creates_deployments_with_schedule_and_trigger(deployed):
    platform, plan, result, _ = deployed
    assert {NIGHTLY, RETRAIN} <= set(result.deployed)
    on_server = {d["name"]: d for d in read_deployments(platform)}
    assert {NIGHTLY, RETRAIN} <= set(on_server)
    nightly = on_server[NIGHTLY]
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert [s["active"] for s in nightly["schedules"]] == [False]
    assert nightly["work_pool_name"] == platform.prefect.work_pool
    assert on_server[RETRAIN]["schedules"] == []
    automations = httpx.post(f"{plan.prefect_api_url}/automations/filter", json={}, timeout=10)
    (auto,) = [a for a in automations.json() if a["name"].startswith(RETRAIN)]
    assert auto["trigger"]["expect"] == [EVENT]
    assert auto["actions"][0]["deployment_id"] == on_server[RETRAIN]["id"]


@pytest.mark.integration
def test_retrain_event_runs_the_deployment_and_registers_a_version(deployed, mlflow_server):
    from mlflow import MlflowClient
    from prefect.settings import PREFECT_API_URL, temporary_settings

    platform, plan, _, reduced_path = deployed
    client = MlflowClient(mlflow_server)
    before = {v.version for v in client.search_model_versions("name='delay_risk'")}
    dep = deployment_id(platform, RETRAIN)
    trigger = "drift"
    reason = f"test-{uuid.uuid4().hex[:6]}"  # identifies this event's run
    t0 = time.monotonic()
    with temporary_settings({PREFECT_API_URL: plan.prefect_api_url}):
        emit_retrain_requested("delay_risk", reason=reason, trigger=trigger, task=reduced_path)
    (run,) = wait_for(lambda: flow_runs(plan.prefect_api_url, dep), 120, "the triggered run")
    latency = time.monotonic() - t0
    assert run["parameters"]["trigger"] == trigger and run["parameters"]["reason"] == reason
    final = wait_for(
        lambda: next(
            (
                r
                for r in flow_runs(plan.prefect_api_url, dep)
                if r["id"] == run["id"] and r["state_type"] in {"COMPLETED", "FAILED", "CRASHED"}
            ),
            None,
        ),
        600,
        "the triggered run to finish",
        every=2,
    )
    print(
        f"event -> flow run created: {latency:.1f} s; run finished after "
        f"{time.monotonic() - t0:.0f} s"
    )
    assert final["state_type"] == "COMPLETED", final["state"]
    # it started warm: a fork of the stack's warm server, not a fresh interpreter
    warm = ping(plan.process(Component.warm).server.url)
    assert warm is not None and warm["fork_safe"] and warm["forks"] >= 1, warm
    assert "shelfwise.flows.monitor" in warm["preloaded"], warm
    new = [v for v in client.search_model_versions("name='delay_risk'") if v.version not in before]
    assert len(new) == 1
    assert new[0].tags["shelfwise.trigger"] == trigger
    # the platform's lines, logged in the worker's flow-run processes, are in the runs' log
    registered = f"registered delay_risk version {new[0].version}"
    decision = f"gate delay_risk v{new[0].version} vs @champion="

    def arrived() -> list[str] | None:
        runs = all_flow_runs(plan.prefect_api_url)
        ids = [r["id"] for r in runs if r["parameters"].get("trigger") == trigger]
        messages = log_messages(plan.prefect_api_url, ids)
        ok = registered in messages and any(m.startswith(decision) for m in messages)
        return messages if ok else None

    wait_for(arrived, 60, "the registration and gate lines in the flow-run logs")


@pytest.mark.integration
def test_a_failing_run_is_failed_in_prefect_with_its_error(deployed):
    platform, _, _, _ = deployed
    outcome = run_deployment_and_wait(platform, RETRAIN, {"task": "no_such_task"}, 300)
    assert outcome.state == "FAILED"
    assert "no task 'no_such_task'" in outcome.message and "declared: " in outcome.message


@pytest.mark.integration
def test_deploy_to_a_missing_work_pool_names_it(deployed, tmp_path):
    platform, _, _, _ = deployed
    other = platform.model_copy(
        update={"prefect": platform.prefect.model_copy(update={"work_pool": "no-such-pool"})}
    )
    with pytest.raises(StackError, match="'no-such-pool' does not exist"):
        deploy(load_deployments_config(), other, project_root(), prefect_file=tmp_path / "p.yaml")
    ghost = DeploymentsConfig(
        deployments=[DeploymentConfig(name="ghost", entrypoint="shelfwise.flows.ghost.ghost")]
    )
    with pytest.raises(DeployError, match="ghost: module shelfwise.flows.ghost is not importable"):
        deploy(ghost, platform, project_root(), prefect_file=tmp_path / "p.yaml", names=["ghost"])
