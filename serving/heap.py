"""Keep the garbage collector off the request path of a serving worker.

A worker holds a large, long-lived heap (MLflow, scikit-learn, XGBoost, pandas and the model:
~230k tracked objects). Every full collection walks all of it (~0.1-0.3 s here) while requests
wait; at concurrency 32 those pauses made the p99 (measured: 590 ms -> 130 ms with the heap
frozen, `benchmarks/bench_serving.py`). ``settle_heap`` collects once and moves everything alive
into the permanent generation (``gc.freeze``), so later collections only look at what requests
allocate. After a model swap it unfreezes first, so the previous model can be collected.
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)


def settle_heap() -> int:
    """Collect garbage, then freeze the survivors; returns how many objects are frozen."""
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info(
        "heap settled: %s objects frozen in %.0f ms", frozen, 1000 * (time.perf_counter() - t0)
    )
    return frozen
