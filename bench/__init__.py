"""Benchmarks: `python -m bench` (see bench/README.md). Never imported by the gateway or tests."""
