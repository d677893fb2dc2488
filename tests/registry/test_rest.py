"""registry/rest.py against the real `mlflow server`: every call answers what MlflowClient
answers for the same model, errors carry MLflow's error codes, and the promote / rollback path
(registry/aliases.py + promotion.py) runs on it without importing mlflow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shelfwise.registry import aliases as al
from shelfwise.registry.rest import RegistryRequestError, RestRegistry

pytestmark = [pytest.mark.integration]


def test_rest_registry_answers_like_mlflow_client(mlflow_server, fresh_model) -> None:
    import mlflow

    name, versions = fresh_model("default", "weak")
    one, two = versions["default"], versions["weak"]
    mc, rest = mlflow.MlflowClient(mlflow_server), RestRegistry(mlflow_server)
    try:
        rest.set_registered_model_alias(name, "champion", one)
        assert dict(mc.get_registered_model(name).aliases) == {"champion": one}
        assert rest.get_registered_model(name).aliases == {"champion": one}
        for got, want in (
            (rest.get_model_version(name, two), mc.get_model_version(name, two)),
            (rest.get_model_version_by_alias(name, "champion"), mc.get_model_version(name, one)),
        ):
            assert (got.name, got.version, got.status, got.run_id, got.source) == (
                want.name,
                str(want.version),
                want.status,
                want.run_id,
                want.source,
            )
            assert got.tags == dict(want.tags) and got.tags  # the training tags came along
        found = sorted(int(v.version) for v in rest.search_model_versions(f"name='{name}'"))
        assert found == sorted(int(v.version) for v in mc.search_model_versions(f"name='{name}'"))

        rest.set_model_version_tag(name, two, "shelfwise.test", "42")
        assert mc.get_model_version(name, two).tags["shelfwise.test"] == "42"
        rest.delete_registered_model_alias(name, "champion")
        assert al.alias_version(mc, name, "champion") is None

        with pytest.raises(RegistryRequestError) as err:
            rest.get_model_version(name, "999")
        assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST" and err.value.status == 404
        assert al.alias_version(rest, name, "champion") is None  # not found -> None, as before
        with pytest.raises(al.RegistryError, match="no version 999"):
            al.resolve_version(rest, name, "999")
        with pytest.raises(al.RegistryError, match="no registered model"):
            al.require_model(rest, name + "_missing")

        move = al.move_champion(rest, name, one)
        assert (move.old_champion, move.new_champion) == (None, one)
        al.move_champion(rest, name, two)
        assert al.aliases_of(mc, name) == {"champion": two, "previous": one}
        al.rollback_champion(rest, name)
        assert al.aliases_of(mc, name) == {"champion": one, "previous": two}
    finally:
        rest.close()


def test_shelfwise_promote_imports_neither_mlflow_nor_scikit_learn(
    mlflow_server, fresh_model, tmp_path
) -> None:
    """The whole command, error handling included, in a fresh interpreter: the alias moves and
    none of the heavy libraries was loaded on the way (that is where its seconds went)."""
    import mlflow

    name, versions = fresh_model("default")
    code = (
        "import sys\n"
        "from shelfwise.flows.cli import app\n"
        "try:\n"
        f"    app(['promote', {name!r}, '--version', {versions['default']!r},"
        " '--reason', 'import check'])\n"
        "except SystemExit as exit_:\n"
        "    assert not exit_.code, exit_.code\n"
        "heavy = sorted(m for m in ('mlflow', 'sklearn', 'pandas') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = {
        **os.environ,
        "SHELFWISE_TRACKING_URI": mlflow_server,
        "SHELFWISE_HOME": str(tmp_path / ".shelfwise"),
        "SHELFWISE_STORE_URL": f"sqlite:///{tmp_path / 'shelfwise.db'}",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "HEAVY []" in out.stderr, out.stderr
    assert (
        mlflow.MlflowClient(mlflow_server).get_model_version_by_alias(name, "champion").version
        == versions["default"]
    )
