"""Online evidence for the gate: the champion and the challenger scored on the *same* live
requests (one answered, the other as its shadow; serving/online.py), labelled by feedback.

- ``paired_frame(rows, champion, challenger)``: from ``PredictionStore.online_rows``, one row
  per labelled request both versions scored: ``y``, ``champion``, ``challenger``;
- ``compare_online(pairs, metric, ...)``: each version's metric on those requests and the
  paired-bootstrap CI of the difference (``registry.gate.paired_bootstrap``: the same rows are
  resampled for both), positive = the challenger is better;
- ``online_check(evidence, comparison)``: the gate's check (``GateRule.online``): at least
  ``min_labelled`` paired requests and a CI lower bound above ``min_improvement``;
- ``with_online_check(decision, check)``: the offline decision with that check added.

Then the side effects the flow wires: ``tag_comparison`` copies a comparison onto the
challenger's MLflow version (``shelfwise.online.*`` tags), and ``abort_challenger`` takes a
challenger out of traffic (canary tag 0, ``@challenger`` removed), recorded in the promotion
history in the same locked transaction.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from shelfwise.configs.gate import BootstrapSettings
from shelfwise.configs.online import CANARY_TAG, OnlineEvidence
from shelfwise.registry import aliases as al
from shelfwise.registry.gate import (
    BootstrapInterval,
    Check,
    GateDecision,
    GateError,
    metric_fn,
    paired_bootstrap,
)
from shelfwise.registry.history import HistoryEntry, HistoryStore

logger = logging.getLogger(__name__)

ANSWERED = ("champion", "canary")
SHADOW = "shadow"
TAG_PREFIX = "shelfwise.online."


@dataclass(frozen=True)
class OnlineComparison:
    metric: str
    champion_version: str
    challenger_version: str
    labelled: int  # paired, labelled requests
    champion_value: float | None
    challenger_value: float | None
    interval: BootstrapInterval | None  # None: too few rows, or one class only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OnlineComparison:
        """Back from ``as_dict`` (e.g. a GateDecision's ``online`` after ``asdict``)."""
        interval = d.get("interval")
        return cls(**{**d, "interval": BootstrapInterval(**interval) if interval else None})

    def as_tags(self) -> dict[str, str]:
        tags = {
            "metric": self.metric,
            "champion_version": self.champion_version,
            "labelled": str(self.labelled),
            "compared_at": datetime.now(UTC).isoformat(),
        }
        if self.champion_value is not None:
            tags[f"champion.{self.metric}"] = f"{self.champion_value:.6f}"
        if self.challenger_value is not None:
            tags[f"challenger.{self.metric}"] = f"{self.challenger_value:.6f}"
        if self.interval is not None:
            iv = self.interval
            tags["improvement"] = f"{iv.improvement:.6f}"
            tags["interval"] = f"[{iv.low:.6f}, {iv.high:.6f}] @ {iv.confidence}"
        return tags


def paired_frame(rows: pd.DataFrame, champion: str, challenger: str) -> pd.DataFrame:
    """Labelled requests scored by both versions (any side answering): columns
    ``prediction_id`` (the answer's), ``y``, ``champion``, ``challenger``, ``created_at``."""
    empty = pd.DataFrame(columns=["prediction_id", "y", "champion", "challenger", "created_at"])
    if rows.empty:
        return empty
    answered = rows[rows["role"].isin(ANSWERED) & rows["actual"].notna()]
    shadows = rows[rows["role"] == SHADOW]
    merged = answered.merge(
        shadows[["pair_of", "model_version", "prediction"]],
        left_on="prediction_id",
        right_on="pair_of",
        suffixes=("", "_shadow"),
    )
    a, s = merged["model_version"].astype(str), merged["model_version_shadow"].astype(str)
    forward = (a == champion) & (s == challenger)
    backward = (a == challenger) & (s == champion)
    merged = merged[forward | backward].drop_duplicates("prediction_id")
    forward = forward[merged.index]
    pairs = pd.DataFrame(
        {
            "prediction_id": merged["prediction_id"],
            "y": merged["actual"].astype(float),
            "champion": np.where(forward, merged["prediction"], merged["prediction_shadow"]),
            "challenger": np.where(forward, merged["prediction_shadow"], merged["prediction"]),
            "created_at": merged["created_at"],
        }
    )
    return pairs[pairs["champion"].notna() & pairs["challenger"].notna()].reset_index(drop=True)


def compare_online(
    pairs: pd.DataFrame,
    metric: str,
    higher: bool,
    champion: str,
    challenger: str,
    bootstrap: BootstrapSettings | None = None,
) -> OnlineComparison:
    """Both versions' ``metric`` on the paired requests and the CI of the improvement."""
    boot = bootstrap or BootstrapSettings()
    n = len(pairs)
    none = OnlineComparison(metric, champion, challenger, n, None, None, None)
    if n < 2:
        return none
    y = pairs["y"].to_numpy(dtype=float)
    a, b = pairs["champion"].to_numpy(dtype=float), pairs["challenger"].to_numpy(dtype=float)
    fn = metric_fn(metric)
    try:
        champ_value, chall_value = fn(y, a), fn(y, b)
        interval = paired_bootstrap(y, a, b, metric, higher, boot.n, boot.seed, boot.confidence)
    except (ValueError, GateError):  # e.g. one class only: no ROC-AUC yet
        return none
    return OnlineComparison(metric, champion, challenger, n, champ_value, chall_value, interval)


def online_check(evidence: OnlineEvidence, comparison: OnlineComparison) -> Check:
    """Enough paired, labelled requests, and the CI lower bound above ``min_improvement``."""
    name = f"online:{comparison.metric}"
    if comparison.labelled < evidence.min_labelled:
        return Check(
            name,
            False,
            f"waiting for online evidence: {comparison.labelled} of {evidence.min_labelled} "
            "labelled requests scored by both versions",
        )
    iv = comparison.interval
    if iv is None:
        return Check(name, False, f"no {comparison.metric} on the live requests yet")
    passed = iv.low > evidence.min_improvement
    return Check(
        name,
        passed,
        f"live {comparison.metric} {comparison.challenger_value:.4f} vs champion "
        f"{comparison.champion_value:.4f} on {comparison.labelled} paired requests: "
        f"improvement {iv.improvement:+.4f}, CI [{iv.low:+.4f}, {iv.high:+.4f}] "
        f"{'>' if passed else '<='} {evidence.min_improvement}",
    )


def evidence_against(evidence: OnlineEvidence, comparison: OnlineComparison) -> bool:
    """Enough evidence, and it says the challenger is not better: abort (not wait)."""
    iv = comparison.interval
    enough = comparison.labelled >= evidence.min_labelled and iv is not None
    return enough and iv.high <= evidence.min_improvement  # type: ignore[union-attr]


def with_online_check(
    decision: GateDecision, check: Check, comparison: OnlineComparison
) -> GateDecision:
    """The offline decision with the online check on ``comparison``: promoted only if both
    pass; the comparison is kept on the decision (``online``)."""
    reasons = [*decision.reasons, check.detail]
    return dataclasses.replace(
        decision,
        promote=decision.promote and check.passed,
        reasons=reasons,
        checks=[*decision.checks, check],
        online=comparison,
    )


# -- side effects ----------------------------------------------------------------------------


def tag_comparison(client: Any, model_name: str, comparison: OnlineComparison) -> None:
    """The comparison as ``shelfwise.online.*`` tags on the challenger's version."""
    try:
        for k, v in comparison.as_tags().items():
            client.set_model_version_tag(
                model_name, comparison.challenger_version, TAG_PREFIX + k, v
            )
    except Exception as exc:  # a copy for the UI; the flow's run and the history are records
        logger.warning("tagging the online comparison on %s failed: %s", model_name, exc)


def set_canary_fraction(client: Any, model_name: str, version: str, fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise al.RegistryError(f"canary fraction must be in [0, 1], got {fraction}")
    client.set_model_version_tag(model_name, str(version), CANARY_TAG, f"{fraction:g}")


def abort_challenger(
    client: Any,
    store: HistoryStore,
    model_name: str,
    version: str,
    reason: str,
    actor: str,
    trigger: str = "manual",
    metrics: dict[str, Any] | None = None,
) -> int:
    """Take ``version`` out of live traffic: its canary tag to 0 and ``@challenger`` removed
    (if it points at it), recorded as an ``online`` / ``aborted`` history row in the same
    locked transaction. Returns the history id."""
    with store.model_lock(model_name) as conn:
        champion = al.alias_version(client, model_name, al.CHAMPION)
        entry = HistoryEntry(
            model_name=model_name,
            action="online",
            decision="aborted",
            promoted=False,
            to_version=str(version),
            from_version=champion,
            champion_after=champion,
            reason=f"online abort: {reason}",
            trigger=trigger,
            actor=actor,
            metrics=metrics or {},
            created_at=datetime.now(UTC),
        )
        history_id = store.record(conn, entry)
        set_canary_fraction(client, model_name, version, 0.0)
        al.clear_challenger_if(client, model_name, str(version))
    logger.info("%s: challenger v%s aborted (%s)", model_name, version, reason)
    return history_id
