"""Benchmark comparisons against baselines: run variants x seeds, then report."""
