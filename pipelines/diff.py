"""Compare two snapshots of a tenant's users."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.snapshots import Baseline, TenantStore, read_snapshot, snapshot_time


def find_new_users(current: pa.Table, baseline: pa.Table) -> pa.Table:
    """Return the users of `current` whose id is not in `baseline` (an anti-join on id).

    Ids are compared exactly: ids that differ only in case or whitespace are different users.
    """
    return _rows_joined(current, baseline.select(["id"]), "left anti")


def find_activated_users(current: pa.Table, baseline: pa.Table) -> pa.Table:
    """Return the users that were `invited` in `baseline` and are `active` in `current`.

    This is the moment an invitee accepts: the management console moves them from
    "Pending invites" to the active users.
    """
    invited = baseline.filter(pc.equal(baseline["status"], "invited")).select(["id"])
    return _rows_joined(current, invited, "left semi", only_status="active")


def _rows_joined(
    table: pa.Table, ids: pa.Table, join_type: str, only_status: str | None = None
) -> pa.Table:
    """Return the rows of `table`, in their order, whose id passes a `join_type` join with `ids`.

    Acero's hash join uses every core, where `pc.is_in` hashes the ids on one thread. It
    cannot carry list columns such as `roles`, so it joins a narrow table of ids and row
    numbers, and `take` copies only the matching rows of the wide one.
    """
    keyed = pa.table({"id": table["id"], "row": np.arange(table.num_rows, dtype=np.int64)})
    if only_status is not None:
        keyed = keyed.filter(pc.equal(table["status"], only_status))
    rows = keyed.join(ids, keys="id", join_type=join_type)["row"]
    return table.take(pc.take(rows, pc.sort_indices(rows)))


@dataclass(frozen=True)
class Comparison:
    """The result of comparing one snapshot with the tenant's baseline."""

    new_users: pa.Table
    activated_users: pa.Table
    baseline: Baseline | None
    note: str
    moves_baseline: bool


def compare_with_baseline(store: TenantStore, snapshot_path: Path) -> Comparison:
    """Find new and activated users in `snapshot_path` against the tenant's baseline."""
    current = read_snapshot(snapshot_path)
    baseline = store.read_baseline()
    empty = current.schema.empty_table()

    if baseline is None:
        return Comparison(
            empty,
            empty,
            None,
            f"First comparison: the snapshot of {snapshot_time(snapshot_path)} becomes the "
            "baseline, no alert.",
            True,
        )
    # Snapshot names sort by time: an older snapshot than the baseline was overtaken by a
    # run that started later, and everything it could report has been reported.
    if snapshot_path.name <= baseline.snapshot.name:
        return Comparison(
            empty,
            empty,
            baseline,
            f"The snapshot of {snapshot_time(snapshot_path)} is not newer than the baseline "
            f"of {snapshot_time(baseline.snapshot)}, so there is nothing to report.",
            False,
        )

    previous = store.read_baseline_snapshot(baseline, columns=["id", "status"])
    new_users = find_new_users(current, previous)
    activated_users = find_activated_users(current, previous)
    note = (
        f"{new_users.num_rows} new and {activated_users.num_rows} activated users since the "
        f"snapshot of {snapshot_time(baseline.snapshot)}"
    )
    return Comparison(new_users, activated_users, baseline, note, True)
