"""serving.heap: the long-lived heap is frozen out of the collector's way, and unfrozen again
so that a swapped-out model can be collected."""

from __future__ import annotations

import gc
import weakref

from shelfwise.serving.heap import settle_heap


class Model:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_settle_heap_freezes_survivors_and_lets_a_replaced_model_go() -> None:
    try:
        old = Model()
        ref = weakref.ref(old)
        assert settle_heap() > 0 and gc.get_freeze_count() > 0
        del old
        gc.collect()
        assert ref() is not None  # frozen: ordinary collections leave it alone
        settle_heap()  # after a swap: unfreeze, collect, freeze again
        assert ref() is None  # the dropped model's cycle was collected
    finally:
        gc.unfreeze()
