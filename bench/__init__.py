"""Benchmarks of the offline tools (``python -m bench.plan_bench``); see bench/README.md."""
