"""Helpers for tests and benchmarks: tiny models built from a config, no downloads."""
