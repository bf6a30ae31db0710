"""Benchmarks of webssl (not part of the test suite)."""
