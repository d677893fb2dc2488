"""Fixtures for registry tests: real delay-risk versions on the session's real `mlflow server`.

Three configurations are fitted, logged and registered once per session (weak: depth-1 trees
with 5 estimators; default: configs/delay_risk.yaml; better: shallower, slower-learning trees,
which win on this data). Each test gets its own registered model (``delay_risk_<uuid>``) whose
versions are new registry versions of those logged models, so tests never share aliases.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

WEAK = {"max_depth": 1, "n_estimators": 5}
BETTER = {"max_depth": 2, "learning_rate": 0.02, "n_estimators": 400}


@dataclass
class DelaySetup:
    spec: object
    cfg: object
    platform: object
    prepared: object
    eval_set: object
    rule: object
    task: object


@pytest.fixture(scope="session")
def delay_setup(data_dir, tmp_path_factory) -> DelaySetup:
    from shelfwise.configs.platform import PlatformConfig
    from shelfwise.configs.tasks import gate_rule, load_task, training_config
    from shelfwise.flows.train import prepare_data
    from shelfwise.registry.gate import load_tabular_eval_set

    task = load_task("delay_risk")
    cfg = training_config(task)
    cfg = cfg.model_copy(update={"xgboost": cfg.xgboost.model_copy(update={"n_jobs": 1})})
    spec = task.dataset_spec()
    platform = PlatformConfig(state_dir=tmp_path_factory.mktemp("gate-state"), data_dir=data_dir)
    kind = task.kind.value
    prepared = prepare_data.fn(spec, cfg, platform, None, kind, task.data)
    eval_set = load_tabular_eval_set(spec, cfg, data_dir, None, kind, task.data)
    assert eval_set.fingerprint == prepared.eval_fingerprint
    assert eval_set.naive_value == pytest.approx(prepared.naive_value)
    return DelaySetup(spec, cfg, platform, prepared, eval_set, gate_rule(task), task)


@pytest.fixture(scope="session")
def source_versions(mlflow_server, delay_setup) -> dict:
    """kind -> ModelVersion of a source model holding the three fitted configurations."""
    import mlflow

    from shelfwise.flows.train import fit_log_register
    from shelfwise.models.tabular import CVResult
    from shelfwise.registry import log as rlog

    mlflow.set_tracking_uri(mlflow_server)
    s = delay_setup
    cfg = s.cfg.model_copy(update={"registered_model_name": f"gate_src_{uuid.uuid4().hex[:8]}"})
    exp = rlog.get_or_create_experiment("gate-tests")
    out = {}
    for kind, upd in (("weak", WEAK), ("default", {}), ("better", BETTER)):
        params = cfg.xgboost.model_copy(update=upd)
        _, version, metrics = fit_log_register(
            s.task,
            s.spec,
            cfg,
            s.prepared,
            "xgboost",
            params,
            exp,
            "manual",
            cv=CVResult([]),  # no CV: the gate tests score the holdout only
            run_name=kind,
        )
        out[kind] = mlflow.MlflowClient().get_model_version(cfg.registered_model_name, version)
    return out


@pytest.fixture
def fresh_model(mlflow_server, source_versions) -> Callable[..., tuple[str, dict[str, str]]]:
    """``fresh_model("default", "weak", ...)`` -> (model name, {kind or kind#i: version})."""
    import mlflow

    def make(*kinds: str) -> tuple[str, dict[str, str]]:
        mlflow.set_tracking_uri(mlflow_server)
        client = mlflow.MlflowClient(mlflow_server)
        name = f"delay_risk_{uuid.uuid4().hex[:10]}"
        client.create_registered_model(name)
        versions: dict[str, str] = {}
        for i, kind in enumerate(kinds):
            src = source_versions[kind]
            mv = mlflow.register_model(src.source, name, tags=dict(src.tags))
            versions[kind if kind not in versions else f"{kind}#{i}"] = str(mv.version)
        return name, versions

    return make


@pytest.fixture
def sqlite_store(tmp_path):
    from shelfwise.registry.history import HistoryStore

    store = HistoryStore.from_url(f"sqlite:///{tmp_path / 'shelfwise.db'}")
    yield store
    store.dispose()


@pytest.fixture
def evaluator(delay_setup):
    """evaluator(client, model) -> Evaluate scoring on the fixed evaluation set."""
    from shelfwise.flows.promote import tabular_evaluator

    def make(client, model_name: str):
        return tabular_evaluator(
            client,
            model_name,
            delay_setup.eval_set,
            delay_setup.rule,
            delay_setup.task.naive_baseline,
        )

    return make
