"""Compare two snapshots of a tenant's users."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


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
