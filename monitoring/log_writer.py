"""The prediction log's database writes in a process of their own.

``BufferedPredictionLogger`` keeps writes off the request path, but its writer thread still
shares the serving process's GIL: JSON encoding, SQLAlchemy's bind processing and the driver's
per-row GIL hand-offs compete with the request handlers. ``ProcessBatchWriter`` moves all of that
into a child process: the logger's thread pickles each batch (one C call) and sends it over a
pipe, the child inserts it with ``PredictionStore.log_predictions`` and answers ``ok`` or the
error. The logger waits for that answer, so its semantics are unchanged: a batch counts as
written only once the child committed it; a failed write (or a dead child, restarted on the next
attempt) is retried with the rows kept; ``flush()``/``close()`` return after the commit.

The child is spawned (not forked: the serving process runs threads), imports only the store,
and exits when the pipe closes, so it cannot outlive its parent for long.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from shelfwise.monitoring.store import PredictionRecord, PredictionStore, StoreError

logger = logging.getLogger(__name__)

_STOP = None


def _child_main(conn: Connection, url: str) -> None:
    """The child: open the store once, insert each batch received, answer each one."""
    store = PredictionStore(url)
    try:
        while True:
            try:
                batch = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if batch is _STOP:
                conn.send(("ok", 0))
                return
            try:
                n = store.log_predictions(batch)
            except Exception as exc:  # reported to the parent, which keeps the rows and retries
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                conn.send(("ok", n))
    finally:
        store.dispose()


class ProcessBatchWriter:
    """``writer(batch)`` inserts ``batch`` in the child process and returns the row count;
    raises ``StoreError`` if the child reports a failure or cannot be reached."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()  # one batch in flight: answers pair with their batch
        self._conn: Connection | None = None
        self._process: Any = None
        self.restarts = 0
        self._start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_child_main,
            args=(child, self.url),
            name="shelfwise-prediction-writer",
            daemon=True,
        )
        process.start()
        child.close()
        self._conn, self._process = parent, process
        logger.info("prediction log writer process %s started", process.pid)

    def _alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def __call__(self, batch: Sequence[PredictionRecord]) -> int:
        if not batch:
            return 0
        with self._lock:
            if not self._alive():
                self._discard()
                self.restarts += 1
                logger.warning("prediction log writer process is gone; starting a new one")
                self._start()
            assert self._conn is not None
            try:
                self._conn.send(list(batch))
                status, detail = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._discard()
                raise StoreError(f"prediction log writer process failed: {exc!r}") from exc
        if status != "ok":
            raise StoreError(str(detail))
        return int(detail)

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(5)
        self._conn = self._process = None

    def close(self, timeout: float = 30.0) -> None:
        """Ask the child to finish (after the batch in flight) and wait for it."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.send(_STOP)
                if self._conn.poll(timeout):
                    self._conn.recv()
            except (EOFError, OSError):
                pass
            self._process.join(timeout)
            if self._process.is_alive():
                logger.error("prediction log writer process did not stop; killing it")
            self._discard()
