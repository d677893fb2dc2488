"""Log runs to MLflow: datasets with lineage, metrics, figures, models; register versions."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from pydantic import BaseModel
from sklearn.pipeline import Pipeline

from shelfwise.models.plots import close
from shelfwise.registry.model_code import model_code, pinned_requirements

logger = logging.getLogger(__name__)

# types skops does not trust by default, in the pipelines we fit ourselves: XGBoost's, and the
# node storage of scikit-learn's trees (random forests) with the numpy dtypes it holds
SKOPS_TRUSTED_TYPES = [
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "xgboost.sklearn.XGBRegressor",
    "sklearn.tree._tree.Tree",
    "numpy.dtype",
]

# tag keys carried by every registered version
TAG_TASK = "shelfwise.task"  # the task's name (configs/tasks/<name>.yaml)
TAG_TASK_SOURCE = "shelfwise.task_source"  # the declaration file it was trained from
TAG_FAMILY = "shelfwise.model_family"
TAG_DATA_FINGERPRINT = "shelfwise.data_fingerprint"
TAG_EVAL_FINGERPRINT = "shelfwise.eval_fingerprint"
TAG_CODE_VERSION = "shelfwise.code_version"
TAG_CONFIG_HASH = "shelfwise.config_hash"
TAG_TRIGGER = "shelfwise.trigger"
# the training split's target mean: the naive baseline (prevalence / mean) the gate compares with
TAG_NAIVE_VALUE = "shelfwise.naive_value"


# training inputs + predictions kept with each version as the drift reference
REFERENCE_ARTIFACT = "reference/reference_sample.csv"


def code_version(repo_dir: Path | None = None) -> str:
    """Git commit of the code (with ``-dirty`` when the tree has changes), or ``unknown``."""
    cwd = repo_dir or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def config_hash(*configs: BaseModel) -> str:
    payload = json.dumps([c.model_dump(mode="json") for c in configs], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


TAG_ERROR = "shelfwise.error"


@contextmanager
def tracked_run(**start_run_kwargs: Any) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run`` that records the error on the run before it is marked FAILED."""
    with mlflow.start_run(**start_run_kwargs) as run:
        try:
            yield run
        except BaseException as exc:
            mlflow.set_tag(TAG_ERROR, f"{type(exc).__name__}: {exc}"[:4000])
            raise


def get_or_create_experiment(name: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name)


def log_dataset(
    df: pd.DataFrame,
    name: str,
    source: str,
    context: str,
    targets: str | None = None,
    digest: str | None = None,
) -> None:
    dataset = mlflow.data.from_pandas(df, source=source, name=name, targets=targets, digest=digest)
    mlflow.log_input(dataset, context=context)


def log_figures(figures: Mapping[str, Figure], artifact_dir: str = "plots") -> None:
    for filename, fig in figures.items():
        mlflow.log_figure(fig, f"{artifact_dir}/{filename}")
        close(fig)


def log_frame(df: pd.DataFrame, artifact_file: str) -> None:
    """A table as a CSV artifact (readable in the UI, read back with ``read_frame``)."""
    mlflow.log_text(df.to_csv(index=False), artifact_file)


def read_frame(client: mlflow.MlflowClient, run_id: str, artifact_file: str) -> pd.DataFrame:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, artifact_file, tmp)
        return pd.read_csv(path)


# what loading a skops-serialised pipeline needs besides what its pickle references
CLASSIFIER_PACKAGES = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops", "xgboost")


def classifier_requirements(packages: tuple[str, ...] = CLASSIFIER_PACKAGES) -> list[str]:
    """Pinned requirements of a logged classifier, from the installed versions.

    Passing them explicitly skips MLflow's requirement inference, which loads the model in a
    subprocess that re-imports MLflow: 42 s of a 44 s ``log_model`` on this (loaded) machine,
    1.7 s without it.
    """
    return pinned_requirements(packages)


def log_classifier(
    pipe: Pipeline,
    X_example: pd.DataFrame,
    proba_example: Any,
    name: str = "model",
    pip_requirements: list[str] | None = None,
) -> ModelInfo:
    """Log a scikit-learn classifier whose pyfunc returns class probabilities.

    Self-contained like every version (registry/model_code.py): pinned requirements for what
    the pipeline references, and the Shelfwise code of any class of ours inside it as
    ``code_paths`` (none today: encoders, imputers and the estimators only; a custom
    transformer would also need its type in ``skops_trusted_types``).
    """
    return _log_sklearn(pipe, X_example, proba_example, "predict_proba", name, pip_requirements)


def log_regressor(
    pipe: Pipeline,
    X_example: pd.DataFrame,
    pred_example: Any,
    name: str = "model",
    pip_requirements: list[str] | None = None,
) -> ModelInfo:
    """Log a scikit-learn regressor whose pyfunc returns the predicted values (self-contained
    like ``log_classifier``)."""
    return _log_sklearn(pipe, X_example, pred_example, "predict", name, pip_requirements)


def _log_sklearn(
    pipe: Pipeline,
    X_example: pd.DataFrame,
    output_example: Any,
    predict_fn: str,
    name: str,
    pip_requirements: list[str] | None,
) -> ModelInfo:
    signature: ModelSignature = infer_signature(X_example, output_example)
    with model_code([pipe], CLASSIFIER_PACKAGES) as code:
        return mlflow.sklearn.log_model(
            pipe,
            name=name,
            signature=signature,
            input_example=X_example.head(5),
            pyfunc_predict_fn=predict_fn,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            code_paths=code.code_paths,
            pip_requirements=pip_requirements or code.requirements,
        )


def register_version(
    model_uri: str, registered_name: str, tags: Mapping[str, str], description: str = ""
) -> ModelVersion:
    """Register ``model_uri`` as a new version carrying ``tags`` (one call: no untagged version)."""
    version = mlflow.register_model(model_uri, registered_name, tags=dict(tags))
    if description:
        mlflow.MlflowClient().update_model_version(
            registered_name, version.version, description=description
        )
    logger.info("registered %s version %s", registered_name, version.version)
    return version
