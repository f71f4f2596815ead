"""Parquet snapshots and the tenant folder."""

import datetime as dt
import stat

import pyarrow as pa
import pytest

from pipelines.snapshots import (
    SNAPSHOT_SCHEMA,
    SnapshotError,
    SnapshotWriter,
    TenantStore,
    read_snapshot,
    users_to_batch,
)


def api_user(user_id, name="Ann", status="active", **fields):
    user = {
        "id": user_id,
        "name": name,
        "email": f"{user_id}@example.com",
        "status": status,
        "subject": f"auth0|{user_id}",
        "createdAt": "2026-11-30T08:15:00.250Z",
        "lastUpdatedAt": "2026-12-01T09:00:00Z",
    }
    user.update(fields)
    return user


def test_batch_has_schema_and_utc_timestamps():
    batch = users_to_batch(
        [
            api_user(
                "a1", inviteExpiry=1765000000, assignedRoles=[{"id": "r", "name": "TenantAdmin"}]
            )
        ]
    )
    row = batch.to_pylist()[0]

    assert batch.schema == SNAPSHOT_SCHEMA
    assert row["created_at"] == dt.datetime(2026, 11, 30, 8, 15, 0, 250000, tzinfo=dt.timezone.utc)
    assert row["invite_expires_at"] == dt.datetime.fromtimestamp(1765000000, dt.timezone.utc)
    assert row["roles"] == ["TenantAdmin"]


def test_numeric_id_stored_as_string():
    batch = users_to_batch([api_user(12345)])

    assert batch.column("id").to_pylist() == ["12345"]


def test_invalid_timestamp_becomes_null_keeping_others():
    batch = users_to_batch([api_user("a", createdAt="yesterday"), api_user("b")])

    created = batch.column("created_at").to_pylist()
    assert created[0] is None
    assert created[1] is not None


def test_writer_commits_complete_file(tmp_path):
    store = TenantStore(tmp_path, "acme")
    writer = SnapshotWriter(store.new_snapshot_path())
    writer.write_page([api_user("a"), api_user("b")], page=1)
    writer.write_page([api_user("c")], page=2)
    path = writer.commit()

    table = read_snapshot(path)
    assert table.column("id").to_pylist() == ["a", "b", "c"]
    assert store.snapshots() == [path]
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_writer_rejects_id_on_two_pages(tmp_path):
    writer = SnapshotWriter(tmp_path / "users-x.parquet")
    writer.write_page([api_user("a")], page=1)

    with pytest.raises(SnapshotError) as raised:
        writer.write_page([api_user("b"), api_user("a")], page=2)
    writer.abort()

    assert "'a'" in str(raised.value)
    assert "pages 1 and 2" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_abort_leaves_no_snapshot(tmp_path):
    store = TenantStore(tmp_path, "acme")
    writer = SnapshotWriter(store.new_snapshot_path())
    writer.write_page([api_user("a")], page=1)
    writer.abort()

    assert store.snapshots() == []
    assert list(store.snapshots_dir.iterdir()) == []


def test_read_snapshot_without_id_column_names_fix(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "users-old.parquet"
    pq.write_table(pa.table({"name": ["x"], "email": ["y"]}), path)

    with pytest.raises(SnapshotError) as raised:
        read_snapshot(path)

    assert "no 'id'" in str(raised.value)
    assert "found: name, email" in str(raised.value)


def test_read_missing_snapshot_names_path(tmp_path):
    with pytest.raises(SnapshotError) as raised:
        read_snapshot(tmp_path / "gone.parquet")

    assert "gone.parquet" in str(raised.value)


def test_baseline_round_trip_and_owner_only_folder(tmp_path):
    store = TenantStore(tmp_path / "data", "acme")
    store.ensure()
    snapshot = store.new_snapshot_path()

    store.write_baseline(snapshot, "run-1")

    baseline = store.read_baseline()
    assert baseline.snapshot == snapshot
    assert baseline.run_id == "run-1"
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700


def test_corrupt_baseline_names_file_and_fix(tmp_path):
    store = TenantStore(tmp_path, "acme")
    store.ensure()
    store.baseline_file.write_text("{not json")

    with pytest.raises(SnapshotError) as raised:
        store.read_baseline()

    assert "baseline.json" in str(raised.value)
    assert "delete it" in str(raised.value)
