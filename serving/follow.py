"""Follow a registry alias: poll it, load + warm a new version in the background, swap atomically.

The served model is one immutable object behind one attribute. A request reads the attribute
once and keeps that reference, so a swap (one assignment) never changes a model under a request
that is running; the old object is freed when its last request finishes. If a new version fails to
load, the old one keeps serving and the failure is recorded (``status()``) and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from shelfwise.serving.push import WakeSignal

logger = logging.getLogger(__name__)


class HasVersion(Protocol):
    version: str
    loaded_at: datetime


M = TypeVar("M", bound=HasVersion)


@dataclass(frozen=True)
class FollowStatus:
    task: str
    registered_name: str
    alias: str
    version: str | None
    serving_since: datetime | None
    alias_points_to: str | None
    last_checked_at: datetime | None
    last_error: str | None
    last_error_version: str | None
    last_error_at: datetime | None
    swaps: int
    wakes: int  # registry events (pushed) that asked for a check


class AliasFollower(Generic[M]):
    """Keeps ``current`` on the version ``registered_name@alias`` points at.

    ``resolve()`` returns the alias's version (None when absent), ``load(version)`` returns a
    loaded, warmed model. Both are plain callables so tests can drive the follower directly.
    """

    def __init__(
        self,
        task: str,
        registered_name: str,
        alias: str,
        resolve: Callable[[], str | None],
        load: Callable[[str], M],
        poll_interval_s: float,
        on_swap: Callable[[], object] | None = None,
        signal: WakeSignal | None = None,
        signal_tick_s: float = 0.2,
    ) -> None:
        self.task = task
        self.registered_name = registered_name
        self.alias = alias
        self._resolve = resolve
        self._load = load
        self.poll_interval_s = poll_interval_s
        self.on_swap = on_swap  # called after each swap (e.g. serving.heap.settle_heap)
        # pushed swaps: a registry event wakes this follower (wake()), or another worker's
        # follower of the same alias through the shared signal file (serving/push.py)
        self.signal = signal
        self.signal_tick_s = signal_tick_s
        self.wakes = 0
        self.current: M | None = None
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.alias_points_to: str | None = None
        self.last_checked_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_version: str | None = None
        self.last_error_at: datetime | None = None
        self.swaps = 0

    # -- checking and swapping ----------------------------------------------------------------

    def check(self, force: bool = False) -> bool:
        """Resolve the alias and swap to its version if it differs; True when a swap happened.

        ``force`` reloads even when the version is unchanged (admin reload). Never raises: a
        failure is recorded and the current model keeps serving.
        """
        with self._check_lock:
            self.last_checked_at = datetime.now(UTC)
            try:
                target = self._resolve()
            except Exception as exc:
                self._record_error(None, f"cannot resolve {self.label}: {_describe(exc)}")
                return False
            self.alias_points_to = target
            if target is None:
                if self.current is not None:
                    logger.warning(
                        "%s no longer exists; still serving version %s",
                        self.label,
                        self.current.version,
                    )
                return False
            current = self.current
            if current is not None and current.version == target and not force:
                return False
            try:
                loaded = self._load(target)
            except Exception as exc:
                kept = f"; still serving version {current.version}" if current else ""
                self._record_error(target, f"{_describe(exc)}{kept}")
                return False
            previous = self.current
            self.current = loaded  # the swap: one reference assignment
            self.swaps += 1
            self.last_error = self.last_error_version = self.last_error_at = None
            logger.info(
                "%s: now serving version %s (was %s)",
                self.label,
                loaded.version,
                previous.version if previous else "nothing",
            )
            del previous
            if self.on_swap is not None:
                try:
                    self.on_swap()
                except Exception as exc:  # never lose a swap over housekeeping
                    logger.warning("%s: after-swap hook failed: %s", self.label, exc)
            return True

    def _record_error(self, version: str | None, message: str) -> None:
        repeated = self.last_error_version == version and self.last_error == message
        self.last_error, self.last_error_version = message, version
        self.last_error_at = datetime.now(UTC)
        (logger.debug if repeated else logger.error)("%s: %s", self.label, message)

    @property
    def label(self) -> str:
        return f"{self.registered_name}@{self.alias}"

    # -- background polling -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._poll, name=f"shelfwise-follow-{self.task}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self, signal_peers: bool = True) -> None:
        """Check the alias now (a registry event said it moved); with ``signal_peers`` the
        followers of the same alias in the other worker processes are told too."""
        self.wakes += 1
        if signal_peers and self.signal is not None:
            try:
                self.signal.bump()
            except OSError as exc:  # the peers fall back to polling
                logger.warning("%s: cannot signal the other workers: %s", self.label, exc)
        self._wake.set()

    def _poll(self) -> None:
        due = time.monotonic() + self.poll_interval_s
        while not self._stop.is_set():
            timeout = max(0.0, due - time.monotonic())
            if self.signal is not None:
                timeout = min(timeout, self.signal_tick_s)
            woken = self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            signalled = self.signal is not None and self.signal.changed()
            if woken or signalled or time.monotonic() >= due:
                self.check()
                due = time.monotonic() + self.poll_interval_s

    def status(self) -> FollowStatus:
        current = self.current
        return FollowStatus(
            task=self.task,
            registered_name=self.registered_name,
            alias=self.alias,
            version=current.version if current else None,
            serving_since=current.loaded_at if current else None,
            alias_points_to=self.alias_points_to,
            last_checked_at=self.last_checked_at,
            last_error=self.last_error,
            last_error_version=self.last_error_version,
            last_error_at=self.last_error_at,
            swaps=self.swaps,
            wakes=self.wakes,
        )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]


def status_dict(status: FollowStatus, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {k: getattr(status, k) for k in FollowStatus.__dataclass_fields__}
    out.update(extra or {})
    return out
