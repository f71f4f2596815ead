"""The comparison of two snapshots."""

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from pipelines.diff import find_activated_users, find_new_users

STATUSES = ["active", "invited", "disabled", "deleted", "provisioned"]


def table(rows):
    return pa.table(
        {
            "id": pa.array([row[0] for row in rows], pa.string()),
            "status": pa.array([row[1] for row in rows], pa.string()),
        }
    )


def test_new_users_excludes_users_in_baseline():
    baseline = table([("a", "active"), ("b", "invited")])
    current = table([("a", "active"), ("b", "active"), ("c", "invited"), ("d", "active")])

    assert sorted(find_new_users(current, baseline)["id"].to_pylist()) == ["c", "d"]


def test_ids_differing_in_case_are_different_users():
    baseline = table([("abc", "active")])
    current = table([("ABC", "active"), ("abc", "active"), ("abc ", "active")])

    assert sorted(find_new_users(current, baseline)["id"].to_pylist()) == ["ABC", "abc "]


def test_activated_users_are_invited_then_active():
    baseline = table([("a", "invited"), ("b", "invited"), ("c", "active"), ("d", "disabled")])
    current = table(
        [("a", "active"), ("b", "invited"), ("c", "active"), ("d", "active"), ("e", "active")]
    )

    assert find_activated_users(current, baseline)["id"].to_pylist() == ["a"]


def test_deleted_invitee_is_not_activated():
    baseline = table([("a", "invited")])
    current = table([("b", "active")])

    assert find_activated_users(current, baseline).num_rows == 0


ids = st.text(min_size=1, max_size=8)
snapshots = st.dictionaries(ids, st.sampled_from(STATUSES), max_size=40)


@given(snapshots, snapshots)
def test_new_users_is_set_difference_on_ids(before, after):
    new = find_new_users(table(list(after.items())), table(list(before.items())))

    assert set(new["id"].to_pylist()) == set(after) - set(before)
    assert new.num_rows == len(set(after) - set(before))


@given(snapshots, snapshots)
def test_activated_users_are_exactly_the_transitions(before, after):
    activated = find_activated_users(table(list(after.items())), table(list(before.items())))

    expected = {
        user_id
        for user_id, status in after.items()
        if status == "active" and before.get(user_id) == "invited"
    }
    assert set(activated["id"].to_pylist()) == expected


@given(snapshots)
def test_both_empty_when_snapshots_match(users):
    snapshot = table(list(users.items()))

    assert find_new_users(snapshot, snapshot).num_rows == 0
    assert find_activated_users(snapshot, snapshot).num_rows == 0
