"""Live traffic with a real shift, replayed through the service's HTTP API (the demo's and the
loop benchmark's scenario, issue 6): a model trained on one segment of the shipping data (the
delay config's ``row_filter``) first sees orders from its own segment that it never trained on,
then a mix dominated by the rest of the data. Each order's true outcome follows as feedback.

Pure functions pick the rows; ``replay`` sends them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from shelfwise.configs.datasets import TabularDatasetSpec
from shelfwise.configs.tabular_training import TabularTrainingConfig
from shelfwise.configs.tasks import TaskDeclaration
from shelfwise.models.datasets import stratified_split
from shelfwise.serving.client import ServiceClient, row_payload

logger = logging.getLogger(__name__)


class ScenarioError(ValueError):
    """The data cannot provide the requested traffic (the message says which part and why)."""


@dataclass(frozen=True)
class Traffic:
    quiet: pd.DataFrame  # the training segment's held-out rows: must not raise an alarm
    shifted: pd.DataFrame  # mostly the unseen segment: must
    shifted_share: float  # share of unseen-segment rows in ``shifted``


def shift_traffic(
    data: pd.DataFrame,
    spec: TabularDatasetSpec,
    cfg: TabularTrainingConfig,
    quiet_rows: int,
    shifted_rows: int,
    shifted_share: float,
    seed: int = 0,
) -> Traffic:
    """Rows for the scenario. In-segment rows come only from the training config's held-out
    split (the same split the train flow makes), so the model has never seen any of them."""
    if not cfg.row_filter:
        raise ScenarioError("the delay config has no row_filter: there is no unseen segment")
    inside = data.query(cfg.row_filter).reset_index(drop=True)
    outside = data.query(f"not ({cfg.row_filter})").reset_index(drop=True)
    _, holdout = stratified_split(inside, spec.target, cfg.split.test_size, cfg.split.seed)
    n_out = round(shifted_rows * shifted_share)
    n_in = shifted_rows - n_out
    if quiet_rows + n_in > len(holdout):
        raise ScenarioError(
            f"the segment {cfg.row_filter!r} has {len(holdout)} held-out rows; the traffic needs "
            f"{quiet_rows} quiet + {n_in} shifted in-segment rows"
        )
    if n_out > len(outside):
        raise ScenarioError(f"only {len(outside)} rows outside {cfg.row_filter!r}; need {n_out}")
    holdout = holdout.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    quiet = holdout.iloc[:quiet_rows]
    mixed = pd.concat(
        [
            holdout.iloc[quiet_rows : quiet_rows + n_in],
            outside.sample(n=n_out, random_state=seed),
        ]
    ).sample(frac=1.0, random_state=seed + 1)
    return Traffic(quiet.reset_index(drop=True), mixed.reset_index(drop=True), n_out / shifted_rows)


@dataclass
class ReplayResult:
    orders: int = 0
    feedback: int = 0
    versions: dict[str, int] = field(default_factory=dict)  # model version -> answers
    mean_probability: float = 0.0
    seconds: float = 0.0


def replay(
    client: ServiceClient,
    task: TaskDeclaration,
    rows: pd.DataFrame,
    batch_size: int,
    id_prefix: str,
    on_batch: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Score ``rows`` through the task's batch endpoint, then send each outcome as feedback."""
    spec = task.dataset_spec()
    t0 = time.monotonic()
    result = ReplayResult()
    total_p = 0.0
    records = rows.to_dict("records")
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        ids = [
            f"{id_prefix}-{r[spec.id_column] if spec.id_column else start + i}"
            for i, r in enumerate(chunk)
        ]
        answers = client.predict_batch(
            task, [row_payload(task, r, oid) for r, oid in zip(chunk, ids, strict=True)]
        )
        for row, answer in zip(chunk, answers, strict=True):
            client.feedback(answer["prediction_id"], float(row[spec.target]))
            v = answer["model_version"]
            result.versions[v] = result.versions.get(v, 0) + 1
            total_p += answer[task.prediction_field]
        result.orders += len(chunk)
        result.feedback += len(chunk)
        if on_batch:
            on_batch(len(chunk))
    result.mean_probability = total_p / max(result.orders, 1)
    result.seconds = round(time.monotonic() - t0, 1)
    return result
