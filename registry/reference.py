"""What monitoring needs from the registry: the served version, its reference sample and the
metrics it passed the gate with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from mlflow import MlflowClient

from shelfwise.registry.log import REFERENCE_ARTIFACT, read_frame

METRIC_TAG_PREFIX = "metric."


@dataclass(frozen=True)
class VersionReference:
    model_name: str
    version: str
    run_id: str
    created_at: datetime
    reference: pd.DataFrame
    gate_metrics: dict[str, float]


def gate_metrics(tags: Mapping[str, str]) -> dict[str, float]:
    """The metrics a version was gated on: its ``metric.<name>`` tags (registry/log.py), as
    floats; a tag that is not a number is skipped."""
    out = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                out[key.removeprefix(METRIC_TAG_PREFIX)] = float(value)
            except (TypeError, ValueError):
                continue
    return out


def load_reference(
    client: MlflowClient, model_name: str, alias: str = "champion"
) -> VersionReference:
    from shelfwise.registry.aliases import resolve_version

    mv = resolve_version(client, model_name, alias)  # RegistryError naming what is missing
    reference = read_frame(client, mv.run_id, REFERENCE_ARTIFACT)
    return VersionReference(
        model_name=model_name,
        version=str(mv.version),
        run_id=mv.run_id,
        created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
        reference=reference,
        gate_metrics=gate_metrics(mv.tags),
    )
