"""The wheel is one package, `shelfwise`, and works on its own: installed into a fresh venv
outside the checkout, the CLI runs, the sub-packages import, the shipped configs load, and the
bare folder names (`models`, `flows`, ...) are not importable."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile

import pytest

pytestmark = [pytest.mark.slow]

FOLDERS = ("configs", "models", "registry", "serving", "monitoring", "flows")


def _run(venv, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV"} and not k.startswith("SHELFWISE_")
    }
    env["PATH"] = f"{venv.bin}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        list(args), cwd=venv.outside, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_wheel_installs_only_shelfwise(wheel_venv) -> None:
    names = zipfile.ZipFile(wheel_venv.wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"shelfwise", wheel_venv.wheel.name.split("-py3")[0] + ".dist-info"}, top
    for folder in FOLDERS:
        assert f"shelfwise/{folder}/__init__.py" in names, folder
    assert "shelfwise/configs/platform.yaml" in names  # the shipped configs are package data
    assert "shelfwise/configs/datasets/ecommerce_shipping.yaml" in names
    assert not any(n.startswith(("shelfwise/tests", "shelfwise/benchmarks")) for n in names)


def test_fresh_venv_runs_the_cli_and_imports_only_shelfwise(wheel_venv) -> None:
    help_ = _run(wheel_venv, str(wheel_venv.bin / "shelfwise"), "--help")
    assert help_.returncode == 0, help_.stderr[-2000:]
    assert "train" in help_.stdout and "promote" in help_.stdout
    probe = (
        "import importlib.util, json, shelfwise.models.forecast, shelfwise.flows.cli\n"
        "from shelfwise.configs.platform import load_platform_config\n"
        "from shelfwise.configs.datasets import load_tabular_spec\n"
        "print(json.dumps({'bare': {n: importlib.util.find_spec(n) is not None for n in "
        f"{list(FOLDERS)!r}}}, 'forecast': shelfwise.models.forecast.__file__, "
        "'data_dir': str(load_platform_config().data_dir), "
        "'target': load_tabular_spec('ecommerce_shipping').target}))"
    )
    out = _run(wheel_venv, str(wheel_venv.python), "-c", probe)
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["bare"] == dict.fromkeys(FOLDERS, False)
    assert "site-packages/shelfwise/models/forecast.py" in found["forecast"]
    assert found["data_dir"] == "data" and found["target"] == "Reached.on.Time_Y.N"
    bare = _run(wheel_venv, str(wheel_venv.python), "-c", "import models")
    assert bare.returncode != 0 and "No module named 'models'" in bare.stderr
