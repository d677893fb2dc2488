"""Benchmarks (``make bench``): each ``bench_<name>.py`` writes results/<name>.json + .md."""
