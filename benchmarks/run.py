"""Run every ``benchmarks/bench_*.py`` (``make bench``); each writes its own results."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import benchmarks


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for mod in sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)):
        if mod.startswith("bench_"):
            logging.getLogger("benchmarks").info("running %s", mod)
            importlib.import_module(f"benchmarks.{mod}").main()


if __name__ == "__main__":
    main()
