"""Benchmarks: the warm engine against per-file clamscan, and what the orchestration costs."""
