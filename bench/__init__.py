"""Benchmarks that run ours and the reference approach in one run and print ratios (not tests)."""
