"""Two 1,000,000-user snapshots built directly as Parquet, compared by ours and by DuckDB.

The tables are built with the standard library and pyarrow only, so the harness does not add
NumPy to an environment that lacks it.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.processes import median, run_worker
from pipelines.snapshots import SNAPSHOT_SCHEMA

# The snapshot writer writes one row group per page of 100 users.
PAGE_ROWS = 100
# Row group size of a writer that buffers pages into row groups of 64Ki rows.
LARGE_ROW_GROUP = 65536
FIRST_NAMES = ("Anna", "Björn", "Chloé", "David", "Grace", "Kenji", "María", "Noah", "Priya", "Wei")
LAST_NAMES = ("Andersson", "Dubois", "García", "Müller", "Nguyễn", "Rossi", "Smith", "Tanaka")
ROLE_NAMES = ("TenantAdmin", "SharedSpaceCreator", "DataSpaceCreator", "Steward", "Analyzer")
INVITED_SHARE = 0.10
# No role, one role or two roles, as the simulator assigns them.
ROLE_COMBINATIONS = [
    [],
    *([name] for name in ROLE_NAMES),
    *([first, second] for first in ROLE_NAMES for second in ROLE_NAMES if first < second),
]


@dataclass(frozen=True)
class SnapshotPair:
    """Paths of a baseline and a current snapshot and the changes built into them."""

    baseline: Path
    current: Path
    new_ids: set[str]
    activated_ids: set[str]


def random_ids(generator: random.Random, count: int) -> list[str]:
    """Return `count` distinct 24-hex-digit ids, shaped like Qlik's user ids."""
    while True:
        text = generator.randbytes(12 * count).hex()
        ids = [text[start : start + 24] for start in range(0, 24 * count, 24)]
        if len(set(ids)) == count:
            return ids


def users_table(generator: random.Random, ids: list[str], statuses: list[str]) -> pa.Table:
    """Build a table of SNAPSHOT_SCHEMA with made-up names, e-mails, times and roles."""
    count = len(ids)
    id_array = pa.array(ids, pa.string())
    first = pa.array(generator.choices(FIRST_NAMES, k=count), pa.string())
    last = pa.array(generator.choices(LAST_NAMES, k=count), pa.string())
    names = pc.binary_join_element_wise(first, last, " ")
    local_parts = pc.utf8_lower(pc.replace_substring(names, " ", "."))
    # anna.smith.62716a@corp.example: the id's first digits keep the addresses distinct.
    short_ids = pc.utf8_slice_codeunits(id_array, 0, 6)
    numbered = pc.binary_join_element_wise(local_parts, short_ids, ".")
    emails = pc.binary_join_element_wise(numbered, pa.array(["corp.example"] * count), "@")
    subjects = pc.binary_join_element_wise(pa.array(["auth0"] * count), id_array, "|")

    start_ms = int(dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    span_ms = 4 * 365 * 24 * 3600 * 1000
    month_ms = 30 * 24 * 3600 * 1000
    created = [start_ms + int(generator.random() * span_ms) for _ in range(count)]
    updated = [value + int(generator.random() * month_ms) for value in created]
    invite_expiry = [
        value // 1000 + 7 * 24 * 3600 if status == "invited" else None
        for value, status in zip(created, statuses)
    ]

    role_lists = generator.choices(ROLE_COMBINATIONS, k=count)

    return pa.Table.from_arrays(
        [
            id_array,
            subjects,
            names,
            emails,
            pa.array(statuses, pa.string()),
            pa.array(created, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array(updated, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            pa.array(invite_expiry, pa.int64()).cast(pa.timestamp("s", tz="UTC")),
            pa.array(role_lists, pa.list_(pa.string())),
        ],
        schema=SNAPSHOT_SCHEMA,
    )


def build_snapshot_pairs(
    folder: Path, users: int, seed: int = 11
) -> tuple[SnapshotPair, SnapshotPair]:
    """Write a baseline of `users` users and a current snapshot with 1% new, 1% activated.

    Returns the pair in two layouts, both zstd: row groups of 100 rows, as SnapshotWriter
    writes one per page, and row groups of LARGE_ROW_GROUP rows, as one write of the table
    would give.
    """
    generator = random.Random(seed)
    changed = users // 100
    ids = random_ids(generator, users + changed)
    baseline_ids, new_ids = ids[:users], ids[users:]

    statuses = ["invited" if generator.random() < INVITED_SHARE else "active" for _ in range(users)]
    invited_positions = [
        position for position, status in enumerate(statuses) if status == "invited"
    ]
    activated_positions = generator.sample(invited_positions, changed)

    baseline = users_table(generator, baseline_ids, statuses)
    current_statuses = list(statuses)
    for position in activated_positions:
        current_statuses[position] = "active"
    current_existing = baseline.set_column(
        4, SNAPSHOT_SCHEMA.field("status"), pa.array(current_statuses, pa.string())
    )
    new_statuses = [generator.choice(("invited", "active")) for _ in range(changed)]
    current = pa.concat_tables([current_existing, users_table(generator, new_ids, new_statuses)])

    activated_ids = {baseline_ids[position] for position in activated_positions}
    pairs = []
    for layout, row_group_size in (("pages", PAGE_ROWS), ("large", LARGE_ROW_GROUP)):
        layout_folder = folder / layout
        layout_folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, table in (("baseline", baseline), ("current", current)):
            path = layout_folder / f"{name}.parquet"
            pq.write_table(table, path, compression="zstd", row_group_size=row_group_size)
            paths.append(path)
        pairs.append(SnapshotPair(paths[0], paths[1], set(new_ids), activated_ids))
    return pairs[0], pairs[1]


def run_comparison(
    pair: SnapshotPair, folder: Path, runs: int, contenders=("ours", "duckdb")
) -> dict:
    """Run each contender `runs` times, interleaved, one fresh process per run.

    Raises:
        AssertionError: a contender's id sets differ from the changes built into the files.
    """
    results: dict[str, list[dict]] = {contender: [] for contender in contenders}
    for run in range(runs):
        for contender in results:
            prefix = folder / f"{contender}-{run}"
            result = run_worker(
                f"compare-{contender}",
                {
                    "baseline": str(pair.baseline),
                    "current": str(pair.current),
                    "ids_prefix": str(prefix),
                },
            )
            _check_ids(contender, prefix, pair)
            results[contender].append(result)

    summary = {}
    for contender, runs_of_contender in results.items():
        summary[contender] = {
            "seconds": median([result["seconds"] for result in runs_of_contender]),
            "read_seconds": median(
                [result["read_seconds"] for result in runs_of_contender if "read_seconds" in result]
            ),
            "peak_rss_mb": median([result["peak_rss_mb"] for result in runs_of_contender]),
            "max_peak_rss_mb": max(result["peak_rss_mb"] for result in runs_of_contender),
            "rss_after_import_mb": median(
                [result["rss_after_import_mb"] for result in runs_of_contender]
            ),
            "new": runs_of_contender[0]["new"],
            "activated": runs_of_contender[0]["activated"],
            "runs": len(runs_of_contender),
            "all_seconds": [result["seconds"] for result in runs_of_contender],
        }
    summary["duckdb"]["threads"] = results["duckdb"][0].get("threads")
    return summary


def _check_ids(contender: str, prefix: Path, pair: SnapshotPair) -> None:
    new_ids = set(Path(f"{prefix}.new.txt").read_text().split())
    activated_ids = set(Path(f"{prefix}.activated.txt").read_text().split())
    if new_ids != pair.new_ids:
        raise AssertionError(
            f"{contender} found {len(new_ids)} new users, expected the {len(pair.new_ids)} "
            f"added to {pair.current.name}; {len(new_ids ^ pair.new_ids)} ids differ"
        )
    if activated_ids != pair.activated_ids:
        raise AssertionError(
            f"{contender} found {len(activated_ids)} activated users, expected the "
            f"{len(pair.activated_ids)} activated in {pair.current.name}; "
            f"{len(activated_ids ^ pair.activated_ids)} ids differ"
        )
