"""Benchmarks of engine-init; ``make bench`` (``python -m bench``) runs them all."""
