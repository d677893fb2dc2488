"""`make bench`: run every benchmark (or those named on the command line); each writes
benchmarks/results/<name>.json and <name>.md."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys

BENCHMARKS = (
    "bench_tuning",
    "bench_serving",
    "bench_forecast",
    "bench_stack",
    "bench_loop",
    "forecast_floor",
    "bench_fanout",
    "bench_push",
)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = argv or list(BENCHMARKS)
    failed = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        logging.getLogger(__name__).info("running %s", name)
        takes_argv = "argv" in inspect.signature(module.main).parameters
        try:
            module.main([]) if takes_argv else module.main()
        except SystemExit as exc:
            if exc.code not in (None, 0):
                failed.append(name)
        except Exception:
            logging.getLogger(__name__).exception("%s failed", name)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
