"""Online evaluation of a task's challenger: shadow, canary, the online evidence the gate can
require, and the alarms that roll a champion back. Declared per task::

    serving:
      challenger:                 # TaskServing.challenger
        alias: challenger         # the alias scored online (default @challenger)
        shadow: true              # score every live request with it, off the response path
        canary_fraction: 0.1      # answer this share of entities with it (sticky by id)
    gate:
      online:                     # GateRule.online: promote only on live, labelled evidence
        min_labelled: 200
        min_improvement: 0.0
    alarms:                       # TaskDeclaration.alarms
      max_error_rate: 0.05
      max_p99_latency_ms: 250
      max_metric_drop: 0.05       # live metric vs the numbers @previous had
      cooldown_s: 3600

A challenger's canary fraction can be changed while it serves (a ramp) with the version tag
``shelfwise.canary_fraction`` (``shelfwise canary <task> --fraction``); the declared value is
the fraction when the tag is absent.
"""

from __future__ import annotations

from pydantic import Field

from shelfwise.configs.base import StrictModel

CANARY_TAG = "shelfwise.canary_fraction"  # on the challenger version: the fraction in force


class ChallengerServing(StrictModel):
    alias: str = Field("challenger", min_length=1, description="the alias scored online")
    shadow: bool = Field(
        False,
        description="score every live request with the challenger too, off the response path "
        "(logged with role shadow, paired with the answered prediction)",
    )
    canary_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of entities (a stable hash of the request's id field) the "
        "challenger answers; the version tag shelfwise.canary_fraction overrides it",
    )
    queue_size: int = Field(
        1000, ge=1, description="shadow jobs waiting at most; beyond, they are dropped + counted"
    )


class OnlineEvidence(StrictModel):
    """What the gate needs from live traffic before it promotes (both roles scored, paired)."""

    min_labelled: int = Field(100, ge=1, description="labelled requests scored by both versions")
    min_improvement: float = Field(
        0.0,
        description="the CI lower bound of (challenger - champion), positive = better, must "
        "exceed this; a negative value allows a bounded loss (non-inferiority)",
    )
    window_s: int | None = Field(
        None, ge=60, description="only requests of the last window_s seconds; None = all"
    )


class AlarmSettings(StrictModel):
    """Alarms on the champion's live traffic; crossing one rolls back to @previous."""

    enabled: bool = False
    window_s: int = Field(900, ge=10, description="the rows of the last window_s seconds")
    min_requests: int = Field(50, ge=1, description="fewer answered requests: no verdict")
    min_labelled: int = Field(50, ge=1, description="fewer labelled: no metric verdict")
    max_error_rate: float | None = Field(
        None, gt=0, le=1, description="share of failed requests (5xx) in the window"
    )
    max_p99_latency_ms: float | None = Field(None, gt=0)
    max_metric_drop: float | None = Field(
        None,
        ge=0,
        description="the live selection metric may be worse than @previous's live value "
        "(or its gate metric when it has no live rows) by at most this, in metric units",
    )
    cooldown_s: int = Field(3600, ge=0, description="after a rollback, no alarm acts for this long")
