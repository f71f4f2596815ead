"""Run every benchmark against the simulated tenant and write docs/benchmarks.md.

Usage: python -m benchmarks [--quick] [--output PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

from benchmarks.comparison import build_snapshot_pairs, run_comparison
from benchmarks.dagster_overhead import benchmark_dagster, measure_imports
from benchmarks.extraction import benchmark_extraction, benchmark_memory, start_tenant
from benchmarks.pacing import benchmark_pacing
from benchmarks.processes import REPO
from benchmarks.report import machine_info, render
from benchmarks.storage import benchmark_storage

logger = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does; `--quick` shrinks everything to check the harness."""

    extraction_users: int = 20_000
    extraction_latency: float = 0.02
    extraction_runs: int = 5
    memory_users: tuple[int, ...] = (20_000, 200_000, 1_000_000)
    comparison_users: int = 1_000_000
    # A run over 100-row groups takes 10 to 20 s, so that layout gets fewer runs.
    comparison_runs_pages: int = 3
    comparison_runs_large: int = 5
    storage_reads: int = 3
    pacing_pages: int = 300
    pacing_latency: float = 0.02
    dagster_users: int = 1_000
    dagster_runs: int = 5
    import_runs: int = 3


QUICK = Sizes(
    extraction_users=2_000,
    extraction_runs=2,
    memory_users=(2_000, 5_000),
    comparison_users=20_000,
    comparison_runs_pages=2,
    comparison_runs_large=2,
    storage_reads=2,
    pacing_pages=120,
    dagster_users=200,
    dagster_runs=2,
    import_runs=1,
)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark extraction, memory, comparison, pacing, Dagster overhead and "
        "storage against the simulated tenant on 127.0.0.1, and write the results as Markdown.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few runs (about a minute), to check that the harness works",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "docs" / "benchmarks.md",
        help="Markdown file to write (default: docs/benchmarks.md)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the raw results to this JSON file"
    )
    return parser.parse_args(argv)


def run_all(sizes: Sizes, work_dir: Path) -> dict:
    """Run the benchmarks in order and return their results."""
    results: dict = {"machine": machine_info()}

    logger.info("Extraction: seeding %d users", sizes.extraction_users)
    tenant, first_seed_seconds = start_tenant(sizes.extraction_users)
    try:
        logger.info("Extraction: every contender, %d runs each", sizes.extraction_runs)
        results["extraction"] = benchmark_extraction(
            tenant, sizes.extraction_users, sizes.extraction_latency, sizes.extraction_runs
        )
        logger.info("Memory: ours at %s users", ", ".join(f"{n:,}" for n in sizes.memory_users))
        results["memory"] = benchmark_memory(tenant, list(sizes.memory_users), work_dir / "memory")
        # The first size was seeded before the extraction runs, so its row reports no seeding.
        if results["memory"][0]["users"] == sizes.extraction_users:
            results["memory"][0]["seed_seconds"] = first_seed_seconds
    finally:
        tenant.stop()
    # Drop the tenant, so its users (gigabytes at 1,000,000) are freed before the next steps.
    del tenant

    logger.info("Storage: snapshot sizes and read times")
    snapshots = {row["users"]: Path(row["snapshot"]) for row in results["memory"]}
    results["storage"] = benchmark_storage(snapshots, work_dir, sizes.storage_reads)
    results["storage_repeat"] = sizes.storage_reads

    logger.info("Comparison: building 2 x %d-user snapshots", sizes.comparison_users)
    started = time.perf_counter()
    pages_pair, large_pair = build_snapshot_pairs(work_dir / "comparison", sizes.comparison_users)
    results["comparison"] = {
        "users": sizes.comparison_users,
        "build_seconds": time.perf_counter() - started,
    }
    logger.info("Comparison: 100-row groups, %d runs each", sizes.comparison_runs_pages)
    results["comparison"]["pages"] = run_comparison(
        pages_pair, work_dir / "comparison", sizes.comparison_runs_pages
    )
    logger.info("Comparison: 65,536-row groups, %d runs each", sizes.comparison_runs_large)
    results["comparison"]["large"] = run_comparison(
        large_pair,
        work_dir / "comparison",
        sizes.comparison_runs_large,
        contenders=("ours", "duckdb", "proposed"),
    )

    logger.info("Pacing: %d pages under the simulator's rate limit", sizes.pacing_pages)
    results["pacing"] = benchmark_pacing(sizes.pacing_pages, sizes.pacing_latency)

    logger.info("Dagster: %d runs of each project", sizes.dagster_runs)
    results["dagster"] = benchmark_dagster(sizes.dagster_users, sizes.dagster_runs)
    logger.info("Dagster: import times")
    results["imports"] = measure_imports(sizes.import_runs)
    results["import_runs"] = sizes.import_runs
    return results


def _to_json(value):
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # One line per request or tenant start would drown the progress lines.
    for name in ("httpx", "pipelines"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sizes = QUICK if arguments.quick else Sizes()

    started = time.perf_counter()
    started_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="qlik-user-watch-bench-") as folder:
        results = run_all(sizes, Path(folder))
    results.update(
        started=started_at,
        duration_seconds=time.perf_counter() - started,
        quick=arguments.quick,
        load_average_end=os.getloadavg(),
    )

    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(render(results))
    logger.info("Wrote %s in %.1f minutes", arguments.output, results["duration_seconds"] / 60)
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2, default=_to_json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
