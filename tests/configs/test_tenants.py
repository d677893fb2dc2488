"""configs/tenants.py: the default tenant owns every task; explicit owners win; inconsistent
files are refused naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shelfwise.configs.loader import ConfigError
from shelfwise.configs.tenants import (
    DEFAULT_TENANT,
    TenantsConfig,
    load_tenants,
    tenant_model_name,
)


def test_shipped_file_is_the_single_default_tenant_owning_every_task(monkeypatch) -> None:
    monkeypatch.delenv("SHELFWISE_TENANTS_CONFIG", raising=False)
    cfg = load_tenants()
    assert [t.id for t in cfg.tenants] == [DEFAULT_TENANT]
    from shelfwise.configs.tasks import task_names

    assert cfg.owners(task_names()) == dict.fromkeys(task_names(), DEFAULT_TENANT)
    assert TenantsConfig() == cfg  # no file: the same single tenant


def test_explicit_owner_wins_over_the_catch_all() -> None:
    cfg = TenantsConfig.model_validate(
        {
            "tenants": [
                {"id": "default", "display_name": "D", "tasks": "*"},
                {"id": "bakery", "display_name": "B", "tasks": ["demand_forecast"]},
            ]
        }
    )
    assert cfg.owner_of("demand_forecast") == "bakery"
    assert cfg.owner_of("delay_risk") == "default"
    no_catch_all = TenantsConfig.model_validate(
        {"tenants": [{"id": "bakery", "display_name": "B", "tasks": ["x"]}]}
    )
    assert no_catch_all.owner_of("y") is None and no_catch_all.owners(["x", "y"]) == {"x": "bakery"}


def test_registered_model_names_per_tenant() -> None:
    assert tenant_model_name("default", "delay_risk") == "delay_risk"
    assert tenant_model_name("bakery", "delay_risk") == "bakery.delay_risk"


@pytest.mark.parametrize(
    "tenants, key",
    [
        ([{"id": "Bad Id", "display_name": "x"}], "tenants.0.id"),
        ([{"id": "a", "display_name": "A"}, {"id": "a", "display_name": "A2"}], "<root>"),
        (
            [
                {"id": "a", "display_name": "A", "tasks": ["t"]},
                {"id": "b", "display_name": "B", "tasks": ["t"]},
            ],
            "<root>",
        ),
        (
            [
                {"id": "a", "display_name": "A", "tasks": "*"},
                {"id": "b", "display_name": "B", "tasks": "*"},
            ],
            "<root>",
        ),
        ([{"id": "a", "display_name": "A", "tasks": ["t", "t"]}], "tenants.0.tasks"),
        ([{"id": "a", "display_name": "A", "colour": "red"}], "tenants.0.colour"),
        ([], "tenants"),
    ],
    ids=[
        "bad-id",
        "duplicate-id",
        "task-owned-twice",
        "two-catch-alls",
        "task-twice",
        "extra",
        "none",
    ],
)
def test_inconsistent_tenants_are_refused_naming_file_and_key(
    tmp_path: Path, monkeypatch, tenants, key
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": tenants}))
    monkeypatch.setenv("SHELFWISE_TENANTS_CONFIG", str(path))
    with pytest.raises(ConfigError) as err:
        load_tenants()
    assert str(path) in str(err.value) and f"key '{key}" in str(err.value)


def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHELFWISE_TENANTS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_tenants()


def test_a_tenants_task_has_its_own_registered_model_and_experiment(
    tmp_path: Path, monkeypatch
) -> None:
    from shelfwise.configs.tasks import load_task, monitoring_config, training_config
    from shelfwise.flows.monitor import task_tenant

    path = tmp_path / "tenants.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "tenants": [
                    {"id": "default", "display_name": "D", "tasks": "*"},
                    {"id": "bakery", "display_name": "B", "tasks": ["demand_forecast"]},
                ]
            }
        )
    )
    monkeypatch.setenv("SHELFWISE_TENANTS_CONFIG", str(path))
    forecast, delay = load_task("demand_forecast"), load_task("delay_risk")
    assert (forecast.tenant, forecast.registered_model) == ("bakery", "bakery.demand_forecast")
    assert forecast.experiment_name == "bakery.demand_forecast"
    assert training_config(forecast).registered_model_name == "bakery.demand_forecast"
    assert monitoring_config(forecast).model_name == "bakery.demand_forecast"
    assert (delay.tenant, delay.registered_model) == ("default", "delay_risk")  # unchanged
    assert task_tenant("demand_forecast") == "bakery" and task_tenant("delay_risk") == "default"


def test_a_task_cannot_name_its_own_tenant(tmp_path: Path, monkeypatch) -> None:
    from shelfwise.configs.loader import configs_dir
    from shelfwise.configs.tasks import load_task

    raw = yaml.safe_load((configs_dir() / "tasks" / "delay_risk.yaml").read_text())
    path = tmp_path / "delay_risk.yaml"
    path.write_text(yaml.safe_dump({**raw, "tenant": "bakery"}))
    with pytest.raises(ConfigError, match="key 'tenant'") as err:
        load_task(path)
    assert str(path) in str(err.value)
