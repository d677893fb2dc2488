"""A task no code names goes through the whole loop from one YAML file: a generated CSV with its
own columns and types (booleans written TRUE/FALSE and yes/no, a missing value), declared in a
tasks folder -> `shelfwise train` (families compete, the winner is gated against the naive
baseline) -> a real `bentoml serve` with typed routes generated from the spec -> predictions and
feedback over HTTP -> `shelfwise monitor` reads exactly those rows with the task's metric."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from shelfwise.configs.platform import PlatformConfig
from shelfwise.registry.server import free_port
from shelfwise.serving.run import start_serving, stop_serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))
TASK = "shop_conversion"
KEY = "new-task-key"


def visits(n: int, seed: int) -> pd.DataFrame:
    """Shop visits whose purchase depends on pages, time on site, region and loyalty."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "coast"], n)
    device = rng.choice(["phone", "desktop"], n, p=[0.7, 0.3])
    pages = rng.poisson(4, n)
    minutes = rng.gamma(2.0, 3.0, n).round(1)
    returning = rng.random(n) < 0.4
    logit = -2.2 + 0.35 * pages + 0.06 * minutes + 0.9 * (region == "coast") + 0.8 * returning
    bought = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "visitor_ref": [f"V{seed}-{i}" for i in range(n)],
            "region": region,
            "device": device,
            "pages_viewed": pages,
            "minutes_on_site": minutes,
            "returning": np.where(returning, "yes", "no"),
            "bought": np.where(bought, "TRUE", "FALSE"),
        }
    )
    frame.loc[3, "minutes_on_site"] = np.nan  # a real file's blank cell
    return frame


def _cli(env: dict[str, str], *args: str) -> dict:
    p = subprocess.run(
        [SHELFWISE, *args, "--json"], env=env, capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return json.loads(p.stdout)


def test_a_new_task_from_one_yaml_file_goes_through_the_loop(
    tmp_path, mlflow_server, prefect_api
) -> None:
    csv = tmp_path / "visits.csv"
    visits(2500, seed=1).to_csv(csv, index=False)
    model = f"{TASK}_{uuid.uuid4().hex[:6]}"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / f"{TASK}.yaml").write_text(
        yaml.safe_dump(
            {
                "name": TASK,
                "kind": "classification",
                "model_name": model,
                "dataset": {
                    "kind": "tabular",
                    "name": "visits",
                    "path": str(csv),
                    "target": "bought",
                    "id_column": "visitor_ref",
                    "categorical": ["region", "device"],
                    "numeric": ["pages_viewed", "minutes_on_site", "returning"],
                },
                # CI size; every other key is the kind's default (candidates, gate, monitoring)
                "training": {
                    "split": {"cv_folds": 3},
                    "random_forest": {"n_estimators": 60},
                    "xgboost": {"n_estimators": 80, "n_jobs": 1},
                },
                "monitoring": {"window": {"min_rows": 100}},
            }
        )
    )
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")},
        "SHELFWISE_TASKS_DIR": str(tasks),
        "SHELFWISE_TRACKING_URI": mlflow_server,
        "SHELFWISE_STORE_URL": store_url,
        "SHELFWISE_HOME": str(tmp_path / ".shelfwise"),
        "SHELFWISE_PREFECT_API_URL": prefect_api,
        "PREFECT_API_URL": prefect_api,
    }

    # train: every default candidate competes; the first version must beat prevalence
    listed = {t["task"]: t for t in _cli(env, "tasks", "--no-registry")}
    assert set(listed) == {TASK} and listed[TASK]["candidates"] == [
        "logistic",
        "random_forest",
        "xgboost",
    ]
    trained = _cli(env, "train", TASK)
    assert trained["model_name"] == model and trained["version"] == "1"
    assert set(trained["candidates"]) == {"logistic", "random_forest", "xgboost"}
    gate = trained["extra"]["gate"]
    assert gate["promoted"] and gate["champion_after"] == "1", gate["reasons"]
    assert any(c["name"].startswith("baseline:prevalence") for c in gate["gate"]["checks"])
    assert trained["metrics"]["roc_auc"] > 0.7

    # serve: the task's typed routes, from its spec
    platform = PlatformConfig(state_dir=tmp_path / "serve")
    server, _ = start_serving(
        platform,
        mlflow_server,
        port=free_port(),
        env={
            "SHELFWISE_TASKS_DIR": str(tasks),
            "SHELFWISE_STORE_URL": store_url,
            "SHELFWISE_API_KEY": KEY,
            "SHELFWISE_POLL_INTERVAL_S": "1",
        },
    )
    traffic = visits(300, seed=2)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            docs = http.get("/docs.json").json()
            body = docs["paths"]["/v1/shop-conversion/predict"]["post"]["requestBody"]
            schema = body["content"]["application/json"]["schema"]
            ref = schema.get("$ref", "").rsplit("/", 1)[-1]
            props = (
                docs["components"]["schemas"][ref]["properties"] if ref else schema["properties"]
            )
            assert {"region", "device", "pages_viewed", "minutes_on_site", "returning"} <= set(
                props
            )
            bad = http.post("/v1/shop-conversion/predict", json={"region": "north"})
            assert 400 <= bad.status_code < 500 and "pages_viewed" in bad.text
            unknown = http.post(
                "/v1/shop-conversion/predict",
                json={
                    "region": "north",
                    "device": "phone",
                    "pages_viewed": 3,
                    "minutes_on_site": 2.0,
                    "returning": 1.0,
                    "coupon": "X",
                },
            )
            assert 400 <= unknown.status_code < 500 and "coupon" in unknown.text

            from shelfwise.configs.tasks import load_task
            from shelfwise.serving.client import ServiceClient, row_payload

            task = load_task(tasks / f"{TASK}.yaml")
            client = ServiceClient(server.url, api_key=KEY)
            rows = traffic.assign(
                returning=(traffic["returning"] == "yes").astype(float),
                bought=(traffic["bought"] == "TRUE").astype(int),
            ).to_dict("records")
            payloads = [row_payload(task, r, r["visitor_ref"]) for r in rows]
            answers = [
                a
                for i in range(0, len(payloads), 100)
                for a in client.predict_batch(task, payloads[i : i + 100])
            ]
            assert {a["model_version"] for a in answers} == {"1"}
            assert all(0 <= a["probability"] <= 1 for a in answers)
            for row, answer in zip(rows, answers, strict=True):
                client.feedback(answer["prediction_id"], float(row["bought"]))
            client.close()
    finally:
        stop_serving(server)  # graceful: every logged prediction is written

    # monitor: exactly the served rows, scored on their feedback with the task's metric
    report = _cli(env, "monitor", TASK, "--no-emit")
    assert report["model_name"] == model and report["model_version"] == "1"
    assert report["window_rows"] == 300 and report["labelled_rows"] == 300
    assert report["performance"]["roc_auc"] > 0.65
    assert report["drift_share"] is not None and report["drift_share"] < 0.3  # same population
