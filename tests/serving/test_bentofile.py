"""`bentoml build` turns bentofile.yaml into a Bento carrying the Shelfwise wheel and the pinned
requirements, and the built Bento serves from an environment that has only that wheel (a fresh
venv, started outside the checkout), following the registry alias like the source service."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from shelfwise.configs.platform import PlatformConfig
from shelfwise.registry.server import free_port
from shelfwise.serving.run import start_serving, stop_serving
from tests.serving.conftest import write_tasks_dir

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_bento_builds_and_serves(
    mlflow_server: str, register_delay, wheel_venv, tmp_path: Path
) -> None:
    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", str(REPO_ROOT), "--output", "tag"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    tag = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento_dir = home / "bentos" / name / version
    meta = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert meta["service"] == "shelfwise.serving.service:ShelfwiseService"
    wheels = list((bento_dir / "env" / "python" / "wheels").glob("shelfwise-*.whl"))
    assert [w.name for w in wheels] == [wheel_venv.wheel.name]
    inside = zipfile.ZipFile(wheels[0]).namelist()
    for module in (
        "shelfwise/serving/service.py",
        "shelfwise/monitoring/store.py",
        "shelfwise/registry/load.py",
        "shelfwise/models/fast_tabular.py",
        "shelfwise/configs/serving.yaml",
        "shelfwise/configs/delay_risk.yaml",
    ):
        assert module in inside, module
    src = bento_dir / "src"
    assert not (src / "tests").exists() and not (src / "serving").exists()  # code: the wheel
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==1.4.39" in requirements and "xgboost==3.2.0" in requirements

    model = f"delay_risk_bento_{uuid.uuid4().hex[:8]}"
    registered = register_delay(model, n_estimators=20)
    platform = PlatformConfig(state_dir=tmp_path / "state")
    server, _ = start_serving(
        platform,
        mlflow_server,
        port=free_port(),
        target=tag,
        name="bento-serve",
        python=str(wheel_venv.python),  # only the wheel installed: no checkout code to fall back on
        cwd=wheel_venv.outside,
        env={
            "BENTOML_HOME": str(home),
            "SHELFWISE_TASKS_DIR": str(write_tasks_dir(tmp_path / "tasks", {"delay_risk": model})),
            "SHELFWISE_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
            "PYTHONPATH": "",
        },
    )
    try:
        order = {
            "order_id": "bento-1",
            "warehouse_block": "B",
            "shipment_mode": "Road",
            "customer_care_calls": 2,
            "customer_rating": 4,
            "prior_purchases": 5,
            "gender": "M",
            "product_importance": "low",
            "cost": 120.0,
            "discount": 5.0,
            "weight": 3000.0,
        }
        r = httpx.post(f"{server.url}/v1/delay-risk", json=order, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == registered.version
    finally:
        stop_serving(server)
