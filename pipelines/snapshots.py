"""Parquet snapshots of a tenant's users, and the folder that contains one tenant's state.

Layout under the data dir, one folder per tenant so that many tenants can share a data dir:

    <data dir>/<tenant key>/snapshots/users-20261204T170000123456Z.parquet   one per extract
    <data dir>/<tenant key>/baseline.json     the snapshot the last comparison used as current
    <data dir>/<tenant key>/changes/<run id>/new_users.parquet, activated_users.parquet
    <data dir>/<tenant key>/alerts/...         alert delivery state and the outbox

A snapshot is written under a temporary name and renamed when complete, so a file named
`users-*.parquet` is always a whole extract.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("subject", pa.string()),
        pa.field("name", pa.string()),
        pa.field("email", pa.string()),
        pa.field("status", pa.string()),
        pa.field("created_at", pa.timestamp("ms", tz="UTC")),
        pa.field("last_updated_at", pa.timestamp("ms", tz="UTC")),
        pa.field("invite_expires_at", pa.timestamp("s", tz="UTC")),
        pa.field("roles", pa.list_(pa.string())),
    ]
)

COLUMN_DESCRIPTIONS = {
    "id": "Qlik user id, an opaque case-sensitive string",
    "subject": "Identity provider subject of the user",
    "name": "Display name, as the user or the identity provider set it",
    "email": "Email address, when the tenant has one",
    "status": "active, invited, disabled, deleted or provisioned",
    "created_at": "When the user was created in the tenant (UTC)",
    "last_updated_at": "When the user record last changed (UTC)",
    "invite_expires_at": "When a pending invite expires (UTC), for invited users",
    "roles": "Names of the roles assigned to the user",
}

_TIMESTAMP_FIELDS = {"created_at": "createdAt", "last_updated_at": "lastUpdatedAt"}


class SnapshotError(Exception):
    """A snapshot or a tenant's state file is missing, unreadable or inconsistent."""


def make_private_dirs(path: Path) -> None:
    """Create `path` and any missing parents with mode 0700, since they hold personal data.

    `Path.mkdir(parents=True, mode=...)` applies the mode to the last folder only.
    """
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename it."""
    make_private_dirs(path.parent)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def users_to_batch(users: list[dict]) -> pa.RecordBatch:
    """Convert one page of API users to a record batch of `SNAPSHOT_SCHEMA`."""
    columns = {
        "id": [str(user["id"]) for user in users],
        "subject": [_as_text(user.get("subject")) for user in users],
        "name": [_as_text(user.get("name")) for user in users],
        "email": [_as_text(user.get("email")) for user in users],
        "status": [_as_status(user.get("status")) for user in users],
    }
    arrays = [pa.array(columns[name], pa.string()) for name in columns]

    for field, source in _TIMESTAMP_FIELDS.items():
        arrays.append(_parse_timestamps([user.get(source) for user in users], field))
    arrays.append(_parse_unix_seconds([user.get("inviteExpiry") for user in users]))
    arrays.append(
        pa.array([_role_names(user.get("assignedRoles")) for user in users], pa.list_(pa.string()))
    )

    return pa.RecordBatch.from_arrays(arrays, schema=SNAPSHOT_SCHEMA)


# Rows per Parquet row group. One group per 100-user page made a 1,000,000-user snapshot take
# seconds to read; groups of this size read in a fraction of a second.
ROW_GROUP_ROWS = 65_536


class SnapshotWriter:
    """Write one snapshot page by page, keeping only Arrow batches in memory.

    Pages are converted to Arrow and written on a background thread, so that the next page is
    requested meanwhile. Raises `SnapshotError` on an id seen twice, since that means the
    listing shifted or a page was repeated and the extract cannot be trusted. Nothing appears
    under the final name unless `commit()` is reached.
    """

    def __init__(self, path: Path):
        self.path = path
        self.row_count = 0
        self._ids: dict[str, int] = {}
        self._batches: list[pa.RecordBatch] = []
        self._buffered_rows = 0
        make_private_dirs(path.parent)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        os.close(handle)
        self._temporary = Path(temporary)
        self._writer = pq.ParquetWriter(self._temporary, SNAPSHOT_SCHEMA, compression="zstd")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-writer")
        self._pending: Future | None = None

    def write_page(self, users: list[dict], page: int) -> None:
        for user in users:
            user_id = str(user["id"])
            if user_id in self._ids:
                raise SnapshotError(
                    f"User id {user_id!r} appears twice (pages {self._ids[user_id]} and {page}); "
                    "the tenant repeated users while paging, so this extract is discarded. "
                    "Run again"
                )
            self._ids[user_id] = page
        if users:
            self._wait()
            self._pending = self._executor.submit(self._append, users)
            self.row_count += len(users)

    def _append(self, users: list[dict]) -> None:
        batch = users_to_batch(users)
        self._batches.append(batch)
        self._buffered_rows += batch.num_rows
        if self._buffered_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._batches:
            table = pa.Table.from_batches(self._batches, schema=SNAPSHOT_SCHEMA)
            self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            self._batches, self._buffered_rows = [], 0

    def _wait(self) -> None:
        # Re-raises, in the caller's thread, any error of the previous page's conversion.
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def commit(self) -> Path:
        try:
            self._wait()
            self._flush()
        finally:
            self._executor.shutdown(wait=True)
        self._writer.close()
        with open(self._temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(self._temporary, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._writer.close()
        finally:
            self._temporary.unlink(missing_ok=True)


def snapshot_time(path: Path) -> str:
    """Return when a snapshot was taken, read from its name, as `2026-12-04 17:00 UTC`."""
    try:
        taken = dt.datetime.strptime(path.stem, "users-%Y%m%dT%H%M%S%fZ")
    except ValueError:
        return path.name
    return taken.strftime("%Y-%m-%d %H:%M:%S UTC")


def read_snapshot(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a snapshot, or only `columns` of it, checking it has the columns comparisons need."""
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    except FileNotFoundError:
        raise SnapshotError(
            f"Snapshot {path} does not exist; it was deleted or moved. Materialize qlik_users "
            "again to take a new one"
        ) from None
    except (pa.ArrowInvalid, OSError) as error:
        raise SnapshotError(
            f"Snapshot {path} is not a readable Parquet file ({error}); delete it and "
            "materialize qlik_users again"
        ) from None

    missing = [name for name in ("id", "status", *(columns or [])) if name not in names]
    if missing:
        raise SnapshotError(
            f"Snapshot {path} has no {', '.join(repr(m) for m in dict.fromkeys(missing))} column "
            f"(found: {', '.join(names)}); it was written by another schema, so delete it "
            "and materialize qlik_users again"
        )

    try:
        return parquet.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as error:
        raise SnapshotError(
            f"Snapshot {path} is not a readable Parquet file ({error}); delete it and "
            "materialize qlik_users again"
        ) from None


@dataclass(frozen=True)
class Baseline:
    """The snapshot that the last successful comparison used as its current snapshot."""

    snapshot: Path
    run_id: str
    updated_at: str


class TenantStore:
    """The folder of one tenant under the data dir, and the files in it."""

    def __init__(self, data_dir: Path | str, tenant: str):
        self.data_dir = Path(data_dir)
        self.tenant = tenant
        self.root = self.data_dir / tenant

    def ensure(self) -> None:
        """Create the tenant's folder, readable by its owner only: it contains personal data."""
        for folder in (self.data_dir, self.root):
            make_private_dirs(folder)

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def baseline_file(self) -> Path:
        return self.root / "baseline.json"

    @property
    def alerts_dir(self) -> Path:
        return self.root / "alerts"

    def new_snapshot_path(self, now: dt.datetime | None = None) -> Path:
        now = now or dt.datetime.now(dt.timezone.utc)
        return self.snapshots_dir / f"users-{now.strftime('%Y%m%dT%H%M%S%fZ')}.parquet"

    def changes_dir(self, run_id: str) -> Path:
        return self.root / "changes" / run_id

    @contextlib.contextmanager
    def lock(self, timeout: float = 600.0, poll: float = 0.2) -> Iterator[None]:
        """Hold this tenant's lock, so that two runs never read and move the baseline at once.

        The lock is an advisory `flock` on `<tenant>/.lock`, released when the process exits,
        even if it crashes. Raises `SnapshotError` after waiting `timeout` seconds.
        """
        self.ensure()
        deadline = time.monotonic() + timeout
        try:
            handle = open(os.open(self.root / ".lock", os.O_WRONLY | os.O_CREAT, 0o600), "w")
        except OSError as error:
            raise SnapshotError(
                f"Could not open the lock file {self.root / '.lock'} ({error.strerror or error}); "
                "remove whatever is at that path and make the folder writable, then run again"
            ) from None
        with handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SnapshotError(
                            f"Another run has held the lock of tenant {self.tenant} for more "
                            f"than {timeout:.0f} s ({self.root / '.lock'}); wait for it to "
                            "finish, or stop it, then run again"
                        ) from None
                    time.sleep(poll)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def prune(self, keep: int) -> list[Path]:
        """Delete all but the newest `keep` snapshots and result folders; keep the baseline's.

        Returns the deleted paths.
        """
        baseline = self.read_baseline()
        protected = {baseline.snapshot.name} if baseline else set()
        deleted = []

        for path in self.snapshots()[:-keep] if keep > 0 else []:
            if path.name not in protected:
                path.unlink(missing_ok=True)
                deleted.append(path)

        changes_root = self.root / "changes"
        if changes_root.is_dir() and keep > 0:
            folders = sorted(changes_root.iterdir(), key=lambda path: path.stat().st_mtime)
            for folder in folders[:-keep]:
                if self._alert_outstanding(folder):
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                deleted.append(folder)
        return deleted

    def _alert_outstanding(self, changes_dir: Path) -> bool:
        """Return whether a run found changes whose alert is not yet delivered everywhere."""
        if (self.alerts_dir / "sent" / f"{changes_dir.name}.json").exists():
            return False
        if (self.alerts_dir / "pending" / f"{changes_dir.name}.json").exists():
            return True
        for name in ("new_users.parquet", "activated_users.parquet"):
            try:
                if pq.ParquetFile(changes_dir / name).metadata.num_rows:
                    return True
            except (OSError, pa.ArrowInvalid):
                continue
        return False

    def snapshots(self) -> list[Path]:
        """Complete snapshots, oldest first."""
        if not self.snapshots_dir.is_dir():
            return []
        return sorted(self.snapshots_dir.glob("users-*.parquet"))

    def read_baseline(self) -> Baseline | None:
        if not self.baseline_file.exists():
            return None
        try:
            state = json.loads(self.baseline_file.read_text())
            relative = Path(state["snapshot"])
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"snapshot {str(relative)!r} is not inside {self.root}")
            return Baseline(
                snapshot=self.root / relative,
                run_id=str(state["run_id"]),
                updated_at=str(state["updated_at"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise SnapshotError(
                f"{self.baseline_file} is not a valid baseline record ({error}); restore it from "
                "a backup, or delete it to make the next run set a new baseline without alerts"
            ) from None

    def read_baseline_snapshot(
        self, baseline: Baseline, columns: list[str] | None = None
    ) -> pa.Table:
        """Read the baseline's snapshot, saying how to recover when it is gone or unreadable."""
        try:
            return read_snapshot(baseline.snapshot, columns)
        except SnapshotError as error:
            raise SnapshotError(
                f"{self.baseline_file} points at {baseline.snapshot}, which is missing or "
                f"unreadable ({error}). Restore that file, or delete {self.baseline_file} to "
                f"set a new baseline; changes since {baseline.updated_at} will then not be "
                "reported"
            ) from None

    def write_baseline(self, snapshot: Path, run_id: str) -> Baseline:
        baseline = Baseline(
            snapshot=snapshot,
            run_id=run_id,
            updated_at=dt.datetime.now(dt.timezone.utc).isoformat(),
        )
        record = {
            "snapshot": str(snapshot.relative_to(self.root)),
            "run_id": run_id,
            "updated_at": baseline.updated_at,
        }
        write_atomically(self.baseline_file, json.dumps(record, indent=2).encode())
        return baseline


def _as_text(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _role_names(roles) -> list[str] | None:
    if not isinstance(roles, list):
        return None
    names = []
    for role in roles:
        if isinstance(role, dict) and role.get("name"):
            names.append(str(role["name"]))
    return names


def _parse_timestamps(values: list, field: str) -> pa.Array:
    texts = pa.array([_as_text(value) for value in values], pa.string())
    try:
        return texts.cast(pa.timestamp("ms", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass

    # One bad value makes the vectorized cast fail: parse one by one, keeping the good ones.
    parsed = []
    for value in values:
        try:
            parsed.append(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")))
        except (TypeError, ValueError):
            if value not in (None, ""):
                logger.warning("Ignoring invalid %s timestamp %r", field, str(value)[:64])
            parsed.append(None)
    return pa.array(
        [
            value.astimezone(dt.timezone.utc) if value and value.tzinfo else value
            for value in parsed
        ],
        pa.timestamp("ms", tz="UTC"),
    )


# 9999-12-31 23:59:59, the last second a Python datetime can hold: values past it are
# stored as null, so previews never overflow.
_MAX_UNIX_SECONDS = 253402300799


def _parse_unix_seconds(values: list) -> pa.Array:
    seconds = []
    for value in values:
        try:
            number = int(value) if value is not None else None
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is not None and not 0 <= number <= _MAX_UNIX_SECONDS:
            logger.warning("Ignoring inviteExpiry %r: not Unix seconds in 1970..9999", value)
            number = None
        seconds.append(number)
    return pa.array(seconds, pa.int64()).cast(pa.timestamp("s", tz="UTC"))


def _as_status(value) -> str | None:
    # Qlik sends lowercase statuses; folding case keeps "Invited" -> "active" an activation.
    text = _as_text(value)
    return text.strip().lower() if text is not None else None
