"""Reproducible benchmarks: `make bench` (`python -m benchmarks.run`); see benchmarks/README.md."""
