"""A task's challenger online: shadow scoring and a sticky canary, beside the champion.

Per tabular task whose declaration asks for it (``serving.challenger``, configs/online.py), a
second ``AliasFollower`` keeps the challenger alias (default ``@challenger``) loaded. Then:

- **canary**: a share of entities, ``in_canary(id, fraction, salt)`` (a SHA-256 of the task
  and the request's id field, never Python's salted ``hash()``), is answered by the challenger.
  The same id always lands on the same side for one fraction, and raising the fraction only
  moves entities champion -> challenger. A request without an id is the champion's. If the
  challenger raises, the champion answers (an ``error`` row is logged for the challenger);
- **shadow**: the version that did not answer scores the same rows in a background thread
  (``ShadowScorer``, a bounded queue: when full, the job is dropped and counted, never the
  response); its rows are logged with role ``shadow`` and ``pair_of`` = the answered
  prediction's id, so feedback on the answer scores both versions on the same request.

The challenger is used only while its alias still points at the loaded version and that
version is not the champion's; a challenger that fails to load, raises or is slow is reported
in ``status()`` (``/v1/versions``) and never changes, delays or fails an answer. The canary
fraction is the declared one unless the challenger version carries the tag
``shelfwise.canary_fraction`` (read on each poll of the alias: a ramp, or 0 to stop).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shelfwise.configs.online import CANARY_TAG, ChallengerServing
from shelfwise.monitoring.store import (
    CANARY_ROLE,
    CHAMPION_ROLE,
    ERROR_ROLE,
    SHADOW_ROLE,
    PredictionRecord,
    new_prediction_id,
)
from shelfwise.serving.follow import AliasFollower

logger = logging.getLogger(__name__)

_SCALE = float(1 << 64)


# -- pure routing ---------------------------------------------------------------------------


def entity_bucket(entity_id: str, salt: str) -> float:
    """A stable number in [0, 1) for an entity: SHA-256 of ``salt:entity_id`` (the same in
    every process and run, unlike ``hash()``)."""
    digest = hashlib.sha256(f"{salt}:{entity_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def in_canary(entity_id: str | None, fraction: float, salt: str) -> bool:
    """True when the challenger answers this entity: sticky (same id, same side) and
    monotone in ``fraction``; no id: never."""
    if entity_id is None or fraction <= 0.0:
        return False
    return fraction >= 1.0 or entity_bucket(entity_id, salt) < fraction


def canary_fraction(declared: float, tag: str | None) -> float:
    """The fraction in force: the version tag when it is a number in [0, 1], else declared."""
    if tag is None:
        return declared
    try:
        value = float(tag)
    except ValueError:
        return declared
    return value if 0.0 <= value <= 1.0 else declared


# -- the shadow's background scoring --------------------------------------------------------


@dataclass(frozen=True)
class ShadowJob:
    model: Any  # a LoadedTabularModel (anything with predict_many, version, registered_name)
    rows: list[dict[str, Any]]
    answered: list[PredictionRecord]  # the logged answers, one per row
    output: str  # the prediction's output field


class ShadowScorer:
    """One thread scoring shadow jobs from a bounded queue; ``log`` receives the shadow rows.
    Nothing here raises into the caller: ``submit`` only enqueues (or drops, counted)."""

    def __init__(
        self, name: str, log: Callable[[list[PredictionRecord]], None], queue_size: int
    ) -> None:
        self._log = log
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=queue_size)
        self.scored = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.latency_ms_total = 0.0
        self.jobs = 0
        self._thread = threading.Thread(target=self._run, name=f"shelfwise-shadow-{name}")
        self._thread.daemon = True
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def mean_latency_ms(self) -> float | None:
        """Mean model time per shadow row."""
        return self.latency_ms_total / self.scored if self.scored else None

    def submit(self, job: ShadowJob) -> bool:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += len(job.rows)
            if self.dropped == len(job.rows) or self.dropped % 1000 < len(job.rows):
                logger.warning("shadow queue full: %s shadow rows dropped so far", self.dropped)
            return False
        return True

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until every queued job is done (tests, shutdown); True when done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._score(job)
            finally:
                self._queue.task_done()

    def _score(self, job: ShadowJob) -> None:
        started = time.perf_counter()
        try:
            values = job.model.predict_many(job.rows)
            if len(values) != len(job.rows):
                raise ValueError(f"{len(values)} predictions for {len(job.rows)} rows")
        except Exception as exc:  # a broken shadow is reported, never raised
            self.errors += len(job.rows)
            self.last_error = f"v{job.model.version}: {type(exc).__name__}: {exc}"[:500]
            self.last_error_at = datetime.now(UTC)
            logger.debug("shadow %s failed: %s", job.model.version, exc)
            return
        per_row = (time.perf_counter() - started) * 1000.0 / len(job.rows)
        records = [
            dataclasses.replace(
                answer,
                prediction_id=new_prediction_id(),
                model_version=str(job.model.version),
                outputs={job.output: float(value)},
                role=SHADOW_ROLE,
                pair_of=answer.prediction_id,
                latency_ms=per_row,
            )
            for answer, value in zip(job.answered, values, strict=True)
        ]
        self.scored += len(records)
        self.latency_ms_total += per_row * len(records)
        self.jobs += 1
        try:
            self._log(records)
        except Exception as exc:
            self.last_error = f"logging shadow rows: {type(exc).__name__}: {exc}"[:500]
            self.last_error_at = datetime.now(UTC)


# -- one task's online evaluation -----------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """Who answered one row: the model, its value, the row's role, the model time."""

    model: Any
    value: float
    role: str
    latency_ms: float


class ChallengerState:
    """What the challenger's last alias lookup said besides its version (the canary tag)."""

    def __init__(self) -> None:
        self.fraction_tag: str | None = None


def resolve_challenger(client: Any, name: str, alias: str, state: ChallengerState) -> str | None:
    """``registry.load.resolve_alias`` that also keeps the version's canary tag."""
    from mlflow.exceptions import MlflowException

    from shelfwise.registry.load import _ABSENT_CODES

    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in _ABSENT_CODES:
            state.fraction_tag = None
            return None
        raise
    state.fraction_tag = (mv.tags or {}).get(CANARY_TAG)
    return str(mv.version)


class OnlineTask:
    """The challenger of one task: who answers a row, and the shadow of what was answered."""

    def __init__(
        self,
        task: str,
        settings: ChallengerServing,
        follower: AliasFollower[Any] | None,
        state: ChallengerState,
        output: str,
        tenant: str,
        log: Callable[[list[PredictionRecord]], None],
    ) -> None:
        self.task = task
        self.settings = settings
        self.follower = follower
        self.state = state
        self.output = output
        self.tenant = tenant
        self._log = log
        self.shadow_scorer = (
            ShadowScorer(task, log, settings.queue_size) if settings.shadow else None
        )
        self.canary_answers = 0
        self.canary_errors = 0
        self.last_canary_error: str | None = None

    @property
    def fraction(self) -> float:
        return canary_fraction(self.settings.canary_fraction, self.state.fraction_tag)

    def challenger(self, champion: Any) -> Any:
        """The loaded challenger, if it may be used: its alias still points at it and it is
        not the champion's version."""
        if self.follower is None:
            return None
        model = self.follower.current
        if model is None or self.follower.alias_points_to != model.version:
            return None
        if champion is not None and str(champion.version) == str(model.version):
            return None
        return model

    def choose(self, champion: Any, entity_id: str | None) -> Any:
        """The model that answers ``entity_id``: the challenger for canary entities."""
        challenger = self.challenger(champion)
        if challenger is not None and in_canary(entity_id, self.fraction, self.task):
            return challenger
        return champion

    def score(
        self, champion: Any, entity_ids: Sequence[str | None], rows: list[dict[str, Any]]
    ) -> list[Scored]:
        """Each row's answer. Canary rows go to the challenger; if it raises, the champion
        answers them and an error row is logged for the challenger. The champion's own
        errors propagate (the service answers them as before) after an error row."""
        chosen = [self.choose(champion, e) for e in entity_ids]
        out: list[Scored | None] = [None] * len(rows)
        canary = [i for i, m in enumerate(chosen) if m is not champion]
        plain = [i for i, m in enumerate(chosen) if m is champion]
        if canary:
            model = chosen[canary[0]]
            try:
                for i, s in zip(canary, _predict(model, [rows[i] for i in canary]), strict=True):
                    out[i] = Scored(model, s[0], CANARY_ROLE, s[1])
                self.canary_answers += len(canary)
            except Exception as exc:
                self.canary_errors += len(canary)
                self.last_canary_error = f"v{model.version}: {type(exc).__name__}: {exc}"[:500]
                self.log_errors(model, [entity_ids[i] for i in canary], [rows[i] for i in canary])
                plain = sorted(plain + canary)
        if plain:
            for i, s in zip(
                plain, self.predict_logged(champion, entity_ids, rows, plain), strict=True
            ):
                out[i] = Scored(champion, s[0], CHAMPION_ROLE, s[1])
        return [s for s in out if s is not None]

    def predict_logged(
        self,
        model: Any,
        entity_ids: Sequence[str | None],
        rows: list[dict[str, Any]],
        idx: list[int],
    ) -> list[tuple[float, float]]:
        try:
            return _predict(model, [rows[i] for i in idx])
        except ValueError:
            raise  # invalid input for this version: the service's 422, not a fault
        except Exception:
            self.log_errors(model, [entity_ids[i] for i in idx], [rows[i] for i in idx])
            raise

    def log_errors(
        self, model: Any, entity_ids: Sequence[str | None], rows: list[dict[str, Any]]
    ) -> None:
        now = datetime.now(UTC)
        self._log(
            [
                PredictionRecord(
                    prediction_id=new_prediction_id(),
                    model_name=model.registered_name,
                    model_version=str(model.version),
                    inputs=dict(row),
                    outputs={},
                    order_id=entity,
                    created_at=now,
                    tenant=self.tenant,
                    role=ERROR_ROLE,
                )
                for entity, row in zip(entity_ids, rows, strict=True)
            ]
        )

    def shadow(
        self,
        champion: Any,
        scored: list[Scored],
        rows: list[dict[str, Any]],
        answered: list[PredictionRecord],
    ) -> None:
        """Queue the other version's scoring of the answered rows (never blocks)."""
        if self.shadow_scorer is None or not answered:
            return
        challenger = self.challenger(champion)
        if challenger is None:
            return
        by_other: dict[int, tuple[Any, list[int]]] = {}
        for i, s in enumerate(scored):
            other = champion if s.role == CANARY_ROLE else challenger
            by_other.setdefault(id(other), (other, []))[1].append(i)
        for other, idx in by_other.values():
            job = ShadowJob(other, [rows[i] for i in idx], [answered[i] for i in idx], self.output)
            self.shadow_scorer.submit(job)

    def status(self) -> dict[str, Any] | None:
        """The challenger's section of ``/v1/versions`` (None: no challenger declared)."""
        if self.follower is None:
            return None
        f = self.follower.status()
        out: dict[str, Any] = {
            "alias": f.alias,
            "version": f.version,
            "alias_points_to": f.alias_points_to,
            "serving_since": f.serving_since,
            "last_error": f.last_error,
            "last_error_version": f.last_error_version,
            "last_error_at": f.last_error_at,
            "canary_fraction": self.fraction,
            "canary_answers": self.canary_answers,
            "canary_errors": self.canary_errors,
            "last_canary_error": self.last_canary_error,
            "shadow": None,
        }
        s = self.shadow_scorer
        if s is not None:
            out["shadow"] = {
                "scored": s.scored,
                "pending": s.pending,
                "dropped": s.dropped,
                "errors": s.errors,
                "last_error": s.last_error,
                "last_error_at": s.last_error_at,
                "mean_latency_ms": s.mean_latency_ms,
            }
        return out

    def start(self) -> None:
        if self.follower is not None:
            self.follower.check()
            self.follower.start()

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.shadow_scorer is not None:
            self.shadow_scorer.stop()


def _predict(model: Any, rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(value, model milliseconds per row) of each row."""
    started = time.perf_counter()
    one = len(rows) == 1
    values = [model.predict_one(rows[0])] if one else list(model.predict_many(rows))
    per_row = (time.perf_counter() - started) * 1000.0 / len(rows)
    return [(float(v), per_row) for v in values]


def online_enabled(settings: ChallengerServing) -> bool:
    return settings.shadow or settings.canary_fraction > 0.0


def online_task(
    task: Any,
    client: Any,
    tracking_uri: str,
    poll_interval_s: float,
    loader: Callable[..., Any],
    tenant: str,
    log: Callable[[list[PredictionRecord]], None],
) -> OnlineTask:
    """The ``OnlineTask`` of a tabular task declaration (``TaskDeclaration``): a challenger
    follower (``loader(tracking_uri, name, version)`` loads a version) only when its
    ``serving.challenger`` declares a shadow or a canary."""
    from functools import partial

    declared: ChallengerServing = task.serving.challenger
    state = ChallengerState()
    follower = None
    if online_enabled(declared):
        name = task.registered_model
        follower = AliasFollower(
            task=task.name,
            registered_name=name,
            alias=declared.alias,
            resolve=partial(resolve_challenger, client, name, declared.alias, state),
            load=partial(loader, tracking_uri, name),
            poll_interval_s=poll_interval_s,
        )
    return OnlineTask(task.name, declared, follower, state, task.prediction_field, tenant, log)
