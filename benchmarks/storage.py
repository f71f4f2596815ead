"""Snapshot size per 100,000 users and the time read_snapshot takes, as written and rewritten."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.comparison import LARGE_ROW_GROUP
from benchmarks.processes import median, run_worker


def describe_snapshot(path: Path) -> dict:
    metadata = pq.ParquetFile(path).metadata
    size = path.stat().st_size
    return {
        "path": str(path),
        "rows": metadata.num_rows,
        "row_groups": metadata.num_row_groups,
        "bytes": size,
        "mb_per_100k": size / 1e6 * 100_000 / metadata.num_rows,
        "footer_bytes": metadata.serialized_size,
    }


def read_seconds(path: Path, repeat: int) -> float:
    """Median seconds of read_snapshot over `repeat` reads in one fresh process."""
    result = run_worker("read-snapshot", {"path": str(path), "repeat": repeat})
    return median(result["times"])


def benchmark_storage(snapshots: dict[int, Path], folder: Path, repeat: int) -> list[dict]:
    """Measure each snapshot ours wrote, and the largest rewritten in LARGE_ROW_GROUP groups."""
    rows = []
    for users, path in sorted(snapshots.items()):
        row = describe_snapshot(path)
        row.update(users=users, layout="as written", read_seconds=read_seconds(path, repeat))
        rows.append(row)

    largest_users, largest = max(snapshots.items())
    rewritten = folder / f"rewritten-{largest_users}.parquet"
    pq.write_table(
        pq.read_table(largest), rewritten, compression="zstd", row_group_size=LARGE_ROW_GROUP
    )
    row = describe_snapshot(rewritten)
    row.update(
        users=largest_users,
        layout=f"rewritten, {LARGE_ROW_GROUP:,}-row groups",
        read_seconds=read_seconds(rewritten, repeat),
    )
    rows.append(row)
    return rows
