"""Benchmarks (not timed tests): ``python -m bench`` writes JSON results and prints a table."""
