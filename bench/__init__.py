"""Benchmarks: each script writes its results into docs/benchmarks.md with the exact command."""
