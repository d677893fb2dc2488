"""Alias following: swap on a new version, keep serving the old one when a load fails."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from shelfwise.configs.loader import ConfigError
from shelfwise.configs.serving import load_serving_config
from shelfwise.serving.follow import AliasFollower


@dataclass(frozen=True)
class Fake:
    version: str
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Registry:
    def __init__(self) -> None:
        self.alias: str | None = None
        self.broken: set[str] = set()
        self.unreachable = False
        self.loads: list[str] = []

    def resolve(self) -> str | None:
        if self.unreachable:
            raise ConnectionError("registry unreachable")
        return self.alias

    def load(self, version: str) -> Fake:
        self.loads.append(version)
        if version in self.broken:
            raise RuntimeError(f"artifact of version {version} is corrupt")
        time.sleep(0.01)  # a load takes time: requests keep flowing meanwhile
        return Fake(version)


def _follower(reg: Registry, poll: float = 60.0) -> AliasFollower[Fake]:
    return AliasFollower("delay_risk", "delay_risk", "champion", reg.resolve, reg.load, poll)


def test_swaps_only_on_change_and_keeps_old_on_failure() -> None:
    reg = Registry()
    f = _follower(reg)
    assert f.check() is False and f.current is None  # no alias yet: nothing, no error
    assert f.status().last_error is None
    reg.alias = "1"
    assert f.check() is True and f.current.version == "1"
    assert f.check() is False and reg.loads == ["1"]  # unchanged: no reload
    reg.alias, reg.broken = "2", {"2"}
    assert f.check() is False
    status = f.status()
    assert status.version == "1" and status.alias_points_to == "2"
    assert status.last_error_version == "2" and "corrupt" in status.last_error
    assert "still serving version 1" in status.last_error
    reg.broken = set()
    assert f.check() is True and f.current.version == "2"
    assert f.status().last_error is None and f.status().swaps == 2
    reg.unreachable = True
    assert f.check() is False and f.current.version == "2"
    assert "unreachable" in f.status().last_error
    reg.unreachable = False
    assert f.check(force=True) is True and reg.loads[-1] == "2"  # admin reload


def test_background_polling_swaps_while_readers_never_see_none() -> None:
    reg = Registry()
    reg.alias = "1"
    f = _follower(reg, poll=0.02)
    f.check()
    seen: set[str] = set()
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            model = f.current  # what a request does: read once, keep it
            if model is None:
                errors.append("none")
            else:
                seen.add(model.version)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for r in readers:
        r.start()
    f.start()
    try:
        for v in ("2", "3"):
            reg.alias = v
            deadline = time.monotonic() + 10
            while f.current.version != v and time.monotonic() < deadline:
                time.sleep(0.01)
            assert f.current.version == v
        deadline = time.monotonic() + 10  # let the readers run once more after the last swap
        while "3" not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        for r in readers:
            r.join()
        f.stop()
    assert not errors and {"1", "2", "3"} <= seen


def test_serving_config_rejects_a_batching_latency_that_sheds_load(tmp_path) -> None:
    bad = tmp_path / "serving.yaml"
    bad.write_text("batching:\n  max_latency_ms: 20\n")
    with pytest.raises(ConfigError, match="batching.max_latency_ms"):
        load_serving_config(bad)
    cfg = load_serving_config(environ={"SHELFWISE_POLL_INTERVAL_S": "2"})
    assert cfg.poll_interval_s == 2.0
    assert cfg.api_key(environ={"SHELFWISE_API_KEY": "s3"}) == "s3"
    assert cfg.api_key("fallback", environ={}) == "fallback"


def test_after_swap_hook_runs_once_per_swap_and_cannot_undo_it() -> None:
    reg = Registry()
    calls: list[str | None] = []
    f = AliasFollower(
        "delay_risk",
        "delay_risk",
        "champion",
        reg.resolve,
        reg.load,
        60.0,
        on_swap=lambda: calls.append(f.current.version if f.current else None),
    )
    reg.alias = "1"
    assert f.check() is True and calls == ["1"]  # the hook sees the new model in place
    assert f.check() is False and calls == ["1"]  # no swap, no hook
    reg.alias, reg.broken = "2", {"2"}
    assert f.check() is False and calls == ["1"]  # failed load: no swap, no hook

    def broken_hook() -> None:
        raise MemoryError("housekeeping failed")

    f.on_swap = broken_hook
    reg.alias, reg.broken = "3", set()
    assert f.check() is True and f.current.version == "3"  # the swap stands
