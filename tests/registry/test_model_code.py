"""Self-contained model versions (registry/model_code.py).

Unit: the staged code layout and the pinned requirements. Slow: a real small version of each
model kind is registered on the session's real MLflow server, downloaded, and loaded in a FRESH
virtualenv built from the version's own ``requirements.txt`` only (cwd outside the checkout, no
PYTHONPATH), where ``import shelfwise`` fails without the version's code; its predictions equal
the in-repo ones. Integration: ``mlflow models serve`` run by that venv's Python answers a
forecast request with the same numbers.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from shelfwise.registry import log as rlog
from shelfwise.registry import model_code as mc

REPO_ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")
LOCKED = {
    line.split("==")[0]: line.strip()
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines()
    if "==" in line and not line.startswith("#")
}
FORECAST_REQUEST = pd.DataFrame({"store": [1, 1], "item": [1, 2], "horizon": [14, 3]})
LOAD_SCRIPT = """
import pickle, sys
import mlflow
model_dir, request_file, out_file = sys.argv[1:4]
model = mlflow.pyfunc.load_model(model_dir)
with open(request_file, "rb") as f:
    request = pickle.load(f)
origins = {m: getattr(sys.modules[m], "__file__", None) for m in sys.modules
           if m.startswith("shelfwise.")}
with open(out_file, "wb") as f:
    pickle.dump({"prediction": model.predict(request), "origins": origins}, f)
"""


# --------------------------------------------------------------------------- unit


def test_staged_code_is_a_namespace_copy_of_the_closure(tmp_path):
    files, external = mc.shelfwise_closure(["shelfwise.registry.forecast_model"])
    assert {"shelfwise.models.forecast", "shelfwise.configs.forecast"} <= set(files)
    assert not any(m.startswith(("shelfwise.flows", "shelfwise.serving")) for m in files)
    assert {"mlflow", "pandas", "xgboost", "prophet", "yaml"} <= external
    root = mc.stage_code(files, tmp_path)
    assert root == tmp_path / "shelfwise"
    assert not (root / "__init__.py").exists()  # stays a namespace package
    assert (root / "models" / "__init__.py").is_file()
    assert (root / "models" / "forecast.py").read_text() == (
        REPO_ROOT / "models" / "forecast.py"
    ).read_text()
    staged = {p.relative_to(root).with_suffix("").parts for p in root.rglob("*.py")}
    assert {tuple(m.split(".")[1:]) for m in files} <= staged


def test_requirements_are_pinned_to_the_lock():
    reqs = mc.requirements_for(["yaml", "sklearn", "os", "shelfwise", "mlflow"])
    names = [r.split("==")[0] for r in reqs]
    assert names == sorted(set(names))
    assert {"pyyaml", "scikit-learn", "mlflow", "cloudpickle", "pyarrow"} <= set(names)
    assert "mlflow-skinny" not in names and "shelfwise" not in names
    for r in reqs:
        assert LOCKED[r.split("==")[0]] == r


def test_third_party_objects_need_no_code():
    from sklearn.linear_model import LogisticRegression

    with mc.model_code([LogisticRegression()], ("mlflow",)) as code:
        assert code.code_paths is None and code.modules == ()
        assert any(r.startswith("scikit-learn==") for r in code.requirements)


# --------------------------------------------------------------------------- fresh environments


@dataclass(frozen=True)
class Version:
    model_dir: Path  # the downloaded version
    request: pd.DataFrame
    expected: object  # the in-repo prediction
    python: Path  # the fresh venv's interpreter


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO_ROOT))
    )
    return env


def fresh_venv(requirements: Path, where: Path) -> Path:
    """A venv holding only ``requirements`` (uv, from its cache); returns its python."""
    venv = where / "venv"
    subprocess.run([UV, "venv", "-q", "--python", "3.11", venv], check=True, cwd=where)
    python = venv / "bin" / "python"
    subprocess.run(
        [UV, "pip", "install", "-q", "--python", python, "-r", requirements],
        check=True,
        cwd=where,
        env=_clean_env(),
    )
    return python


def download(model_uri: str, dst: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))


def register(name: str, info) -> str:
    mv = rlog.register_version(info.model_uri, name, {rlog.TAG_TASK: name})
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", mv.version)
    return f"models:/{name}@champion"


def run_fresh(version: Version, tmp_path: Path) -> dict:
    """Load the version in its fresh venv (cwd outside the checkout, no PYTHONPATH), predict."""
    request_file, out_file = tmp_path / "request.pkl", tmp_path / "out.pkl"
    request_file.write_bytes(pickle.dumps(version.request))
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    proc = subprocess.run(
        [version.python, script, version.model_dir, request_file, out_file],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pickle.loads(out_file.read_bytes())


def assert_no_shelfwise(python: Path, cwd: Path) -> None:
    proc = subprocess.run(
        [python, "-c", "import shelfwise"], cwd=cwd, env=_clean_env(), capture_output=True
    )
    assert proc.returncode != 0 and b"No module named 'shelfwise'" in proc.stderr


def small_hybrid(data_dir: Path):
    from shelfwise.configs.datasets import load_timeseries_spec
    from shelfwise.configs.forecast import ForecastConfig, load_forecast_config
    from shelfwise.models.datasets import load_timeseries
    from shelfwise.models.forecast import HybridProphetXGBoost, prepare_panel

    raw = load_forecast_config("demand_forecast").model_dump()
    raw.update(horizon=14, workers=1)
    raw["features"]["lags"] = [14, 364]
    raw["data"]["max_series"] = 2
    raw["xgboost"].update(n_estimators=20, n_jobs=1)
    cfg = ForecastConfig.model_validate(raw)
    spec = load_timeseries_spec("store_item_demand")
    df, _ = load_timeseries(spec, data_dir)
    panel = prepare_panel(df, spec, cfg)
    model = HybridProphetXGBoost(cfg).fit(panel)
    tail = panel.frame.groupby("sid").tail(14)
    wobble = np.where(np.arange(len(tail)) % 2 == 0, 1.1, 0.9)  # stand-in residuals
    model.calibrate(tail.assign(yhat=tail["y"] * wobble)[["sid", "y", "yhat"]])
    return model


@pytest.fixture(scope="module")
def forecast_version(mlflow_server, data_dir, tmp_path_factory) -> Version:
    from shelfwise.registry.forecast_model import forecast, log_forecast_model

    model = small_hybrid(data_dir)
    mlflow.set_tracking_uri(mlflow_server)
    name = f"demand_forecast_sc_{uuid.uuid4().hex[:8]}"
    with mlflow.start_run(experiment_id=rlog.get_or_create_experiment(name)):
        info = log_forecast_model(model)
    where = tmp_path_factory.mktemp("forecast-version")
    model_dir = download(register(name, info), where / "model")
    python = fresh_venv(model_dir / "requirements.txt", where)
    return Version(model_dir, FORECAST_REQUEST, forecast(model, FORECAST_REQUEST), python)


@pytest.fixture(scope="module")
def delay_version(mlflow_server, data_dir, tmp_path_factory) -> Version:
    from shelfwise.configs.datasets import load_tabular_spec
    from shelfwise.configs.tabular_training import XGBoostParams
    from shelfwise.models.datasets import load_tabular
    from shelfwise.models.tabular import build_xgb_pipeline, features_and_target

    spec = load_tabular_spec("ecommerce_shipping")
    X, y = features_and_target(load_tabular(spec, data_dir)[0], spec)
    params = XGBoostParams(n_estimators=10, max_depth=3, n_jobs=1)
    pipe = build_xgb_pipeline(spec, params, 0).fit(X, y)
    mlflow.set_tracking_uri(mlflow_server)
    name = f"delay_risk_sc_{uuid.uuid4().hex[:8]}"
    with mlflow.start_run(experiment_id=rlog.get_or_create_experiment(name)):
        info = rlog.log_classifier(pipe, X.head(20), pipe.predict_proba(X.head(20)))
    where = tmp_path_factory.mktemp("delay-version")
    model_dir = download(register(name, info), where / "model")
    python = fresh_venv(model_dir / "requirements.txt", where)
    request = X.sample(200, random_state=1)
    return Version(model_dir, request, pipe.predict_proba(request), python)


def _mlmodel(model_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((model_dir / "MLmodel").read_text())


@pytest.mark.slow
@pytest.mark.integration
def test_forecast_version_loads_in_its_own_environment(forecast_version, tmp_path):
    v = forecast_version
    assert _mlmodel(v.model_dir)["flavors"]["python_function"]["code"] == "code"
    reqs = (v.model_dir / "requirements.txt").read_text().split()
    assert all(LOCKED[r.split("==")[0]] == r for r in reqs)
    assert {"mlflow", "pandas", "numpy", "xgboost", "prophet", "cloudpickle"} <= {
        r.split("==")[0] for r in reqs
    }
    assert_no_shelfwise(v.python, tmp_path)
    got = run_fresh(v, tmp_path)
    code_dir = str(v.model_dir / "code" / "shelfwise")
    assert got["origins"]["shelfwise.models.forecast"].startswith(code_dir)
    assert all(path is None or path.startswith(code_dir) for path in got["origins"].values())
    pred, expected = got["prediction"], v.expected
    assert len(pred) == 17 and list(pred.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(pred, expected, check_exact=False, rtol=0, atol=1e-9)


@pytest.mark.slow
@pytest.mark.integration
def test_delay_version_loads_in_its_own_environment(delay_version, tmp_path):
    v = delay_version
    assert not _mlmodel(v.model_dir)["flavors"]["python_function"].get("code")  # no code of ours
    reqs = (v.model_dir / "requirements.txt").read_text().split()
    assert all(LOCKED[r.split("==")[0]] == r for r in reqs)
    assert {"skops", "scikit-learn", "xgboost"} <= {r.split("==")[0] for r in reqs}
    assert_no_shelfwise(v.python, tmp_path)
    got = run_fresh(v, tmp_path)
    assert got["origins"] == {}
    np.testing.assert_allclose(np.asarray(got["prediction"]), v.expected, rtol=0, atol=1e-9)


@pytest.mark.slow
@pytest.mark.integration
def test_in_process_load_uses_the_installed_classes(forecast_version, tmp_path):
    """Our own venv, nothing of Shelfwise imported yet: ``load_local_pyfunc`` serves the model
    with the installed modules (not the version's copy) and leaves ``sys.path`` as it was."""
    script = textwrap.dedent(
        """
        import json, pickle, sys
        from shelfwise.registry.model_code import load_local_pyfunc
        before = list(sys.path)
        model = load_local_pyfunc(sys.argv[1])
        from shelfwise.models.forecast import HybridProphetXGBoost
        request = pickle.loads(open(sys.argv[2], "rb").read())
        print(json.dumps({
            "same_path": sys.path == before,
            "isinstance": isinstance(model.unwrap_python_model().model, HybridProphetXGBoost),
            "files": [sys.modules[m].__file__ for m in sys.modules
                      if m.startswith("shelfwise.") and hasattr(sys.modules[m], "__file__")],
            "yhat": model.predict(request)["yhat"].tolist(),
        }))
        """
    )
    request_file = tmp_path / "request.pkl"
    request_file.write_bytes(pickle.dumps(forecast_version.request))
    proc = subprocess.run(
        [sys.executable, "-c", script, forecast_version.model_dir, request_file],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same_path"] and out["isinstance"]
    assert out["files"] and all(f.startswith(str(REPO_ROOT)) for f in out["files"])
    assert out["yhat"] == forecast_version.expected["yhat"].tolist()


# --------------------------------------------------------------------------- mlflow models serve


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow models serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # poll interval of the health check, not a wait for readiness
    raise AssertionError(f"{url}/health did not answer within {timeout_s}s")


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_models_serve_from_the_fresh_environment(forecast_version, tmp_path):
    import httpx

    from shelfwise.registry.server import free_port

    v = forecast_version
    port = free_port()
    cmd = [v.python, "-m", "mlflow", "models", "serve", "-m", v.model_dir]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    env = _clean_env()
    env["PATH"] = os.pathsep.join([str(v.python.parent), env["PATH"]])  # as if activated
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        payload = {"dataframe_split": v.request.to_dict(orient="split", index=False)}
        resp = httpx.post(f"{url}/invocations", json=payload, timeout=60)
        assert resp.status_code == 200, resp.text
        got = pd.DataFrame(resp.json()["predictions"])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    expected = v.expected
    assert len(got) == len(expected)
    assert (pd.to_datetime(got["date"]).to_numpy() == expected["date"].to_numpy()).all()
    for col in ("store", "item"):
        assert got[col].tolist() == expected[col].tolist()
    for col in ("yhat", "yhat_lower", "yhat_upper"):
        np.testing.assert_allclose(got[col], expected[col], rtol=0, atol=1e-9)
