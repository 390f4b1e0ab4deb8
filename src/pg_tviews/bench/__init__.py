"""Benchmarks: write latency of read-model implementations on the blog schema."""

from .runner import OPERATIONS, BenchReport, Measurement, Scale, run

__all__ = ["OPERATIONS", "BenchReport", "Measurement", "Scale", "run"]
