"""Benchmarks of qlik-user-watch against the simulated tenant; `python -m benchmarks` runs them.

Nothing here is imported by the pipeline or the tests. Each measurement runs in a fresh process
(benchmarks.workers), so time and peak memory belong to one contender.
"""
