"""The gate's task comes from the version (flows/promote.py ``version_task``): no server."""

from __future__ import annotations

import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from shelfwise.flows.promote import version_task
from shelfwise.registry import log as rlog
from shelfwise.registry.aliases import RegistryError


def _version(**tags: str) -> ModelVersion:
    return ModelVersion("shop_model", "7", 0, tags=[ModelVersionTag(k, v) for k, v in tags.items()])


def test_the_version_tag_names_a_declared_task(tmp_path) -> None:
    from shelfwise.configs.tasks import task_names

    for task in task_names():
        assert version_task(None, _version(**{rlog.TAG_TASK: task})) == task
    # the declaration it was trained from wins while that file exists
    source = tmp_path / "my_task.yaml"
    source.write_text("name: x\n")
    tags = {rlog.TAG_TASK: "delay_risk", rlog.TAG_TASK_SOURCE: str(source)}
    assert version_task(None, _version(**tags)) == str(source)
    gone = {rlog.TAG_TASK: "delay_risk", rlog.TAG_TASK_SOURCE: str(tmp_path / "gone.yaml")}
    assert version_task(None, _version(**gone)) == "delay_risk"


def test_an_undeclared_task_in_the_tag_is_refused_with_the_fix() -> None:
    with pytest.raises(RegistryError) as exc:
        version_task(None, _version(**{rlog.TAG_TASK: "shop_model"}))
    msg = str(exc.value)
    assert "shop_model version 7 has shelfwise.task='shop_model', which is not a declared" in msg
    assert "set_model_version_tag('shop_model', '7', 'shelfwise.task', <task>)" in msg
    assert "delay_risk" in msg  # the declared tasks are listed


def test_no_tag_and_no_run_names_version_and_tag() -> None:
    with pytest.raises(RegistryError, match="shop_model version 7 has no 'shelfwise.task' tag"):
        version_task(None, _version())
