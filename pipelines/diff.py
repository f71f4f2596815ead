"""Compare two snapshots of a tenant's users."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.snapshots import Baseline, TenantStore, read_snapshot, snapshot_time


def find_new_users(current: pa.Table, baseline: pa.Table) -> pa.Table:
    """Return the users of `current` whose id is not in `baseline` (an anti-join on id).

    Ids are compared exactly: ids that differ only in case or whitespace are different users.
    """
    known = pc.is_in(current["id"], value_set=baseline["id"], skip_nulls=True)
    return current.filter(pc.invert(known))


def find_activated_users(current: pa.Table, baseline: pa.Table) -> pa.Table:
    """Return the users that were `invited` in `baseline` and are `active` in `current`.

    This is the moment an invitee accepts: the management console moves them from
    "Pending invites" to the active users.
    """
    invited_ids = baseline.filter(pc.equal(baseline["status"], "invited"))["id"]
    now_active = pc.equal(current["status"], "active")
    was_invited = pc.is_in(current["id"], value_set=invited_ids, skip_nulls=True)
    return current.filter(pc.and_(now_active, was_invited))


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
