"""Helpers shared by tests, benchmarks and scripts: real processes on loopback."""
