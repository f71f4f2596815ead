"""The users table of the tenant and the changes since the last comparison."""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetSpec,
    Failure,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
    multi_asset,
)
from dagster._cli.utils import TMP_DAGSTER_HOME_PREFIX

from pipelines.alerts import AlertConfigError
from pipelines.checks import ExtractConfig, check_complete_listing, check_no_large_drop
from pipelines.diff import compare_with_baseline
from pipelines.qlik import QlikError
from pipelines.resources import QlikResource, UserStoreResource
from pipelines.settings import asset_owners, longest_schedule_gap, schedule_settings
from pipelines.snapshots import (
    COLUMN_DESCRIPTIONS,
    SNAPSHOT_SCHEMA,
    SnapshotError,
    SnapshotWriter,
    TenantStore,
    write_atomically,
)

GROUP = "qlik_user_watch"
KINDS = {"qlik", "parquet"}
PREVIEW_ROWS = 20
PROGRESS_EVERY_PAGES = 10
# One run per tenant at a time: dagster.yaml limits this pool to one run. Runs of the CLI bypass
# the queue, so the comparison also takes the tenant's file lock.
POOL = "qlik_tenant"


def _freshness_policy() -> FreshnessPolicy:
    """Stale after twice the longest gap between scheduled runs, warned at one and a half."""
    gap = longest_schedule_gap(*schedule_settings())
    return FreshnessPolicy.time_window(fail_window=2 * gap, warn_window=1.5 * gap)


FRESHNESS = _freshness_policy()
OWNERS = asset_owners()

COLUMN_SCHEMA = TableSchema(
    columns=[
        TableColumn(field.name, str(field.type), description=COLUMN_DESCRIPTIONS[field.name])
        for field in SNAPSHOT_SCHEMA
    ]
)


def _data_dir_error(user_store: UserStoreResource, error: OSError) -> Exception:
    return SnapshotError(
        f"Could not write under the data dir {user_store.root()} ({type(error).__name__}: "
        f"{error.strerror or error}, {error.filename}); point QLIK_USERS_DATA_DIR at a folder "
        "this process can write, with free space"
    )


def _fail(error: Exception) -> Failure:
    return Failure(description=str(error), allow_retries=False)


@asset(
    group_name=GROUP,
    kinds=KINDS,
    pool=POOL,
    freshness_policy=FRESHNESS,
    owners=OWNERS,
    description=(
        "Every user of the Qlik Cloud tenant, as listed by GET /api/v1/users: one row per user "
        "with id, name, email, status (active, invited, disabled, deleted or provisioned, the "
        "last for users created by the identity provider through SCIM) and creation time. "
        "Each materialization writes a new immutable Parquet snapshot. Plotted metadata: "
        "users per status (users_active, users_invited, ...), pages read and retries needed."
    ),
    check_specs=[
        AssetCheckSpec(
            "complete_listing",
            asset="qlik_users",
            blocking=True,
            description=(
                "The snapshot has as many users as the tenant's totalResults. A shorter list "
                "stops the run, so that missing users are never reported as new later."
            ),
        ),
        AssetCheckSpec(
            "no_large_drop",
            asset="qlik_users",
            blocking=True,
            description=(
                "At most max_drop_share (20% by default) of the baseline's users are gone. A "
                "larger drop stops the run unless it is launched with allow_large_drop: true."
            ),
        ),
    ],
)
def qlik_users(
    context: AssetExecutionContext,
    config: ExtractConfig,
    qlik: QlikResource,
    user_store: UserStoreResource,
) -> MaterializeResult:
    try:
        tenant_url = qlik.resolved_tenant_url()
        store = user_store.for_tenant(qlik.tenant())
        store.ensure()
        snapshot = _extract_snapshot(context, qlik, store)
    except (QlikError, SnapshotError) as error:
        raise _fail(error) from None
    except OSError as error:
        raise _fail(_data_dir_error(user_store, error)) from None

    path, pages, retries, total_results, statuses = snapshot
    row_count = sum(statuses.values())
    context.log.info(f"Wrote {row_count} users from {pages} pages to {path}")

    metadata = {
        "path": MetadataValue.path(str(path)),
        "tenant": store.tenant,
        "tenant_url": MetadataValue.url(str(tenant_url).rstrip("/")),
        # NOTE: Qlik documents /console as the Management Console; the /users subpage is
        # where its Users list opens today, which Qlik's help does not state.
        "management_console_users": MetadataValue.url(
            f"{str(tenant_url).rstrip('/')}/console/users"
        ),
        "dagster/row_count": row_count,
        "pages": pages,
        "retries": retries,
        "dagster/column_schema": COLUMN_SCHEMA,
    }
    if total_results is not None:
        metadata["total_results"] = total_results
    for status in ("active", "invited", "disabled", "deleted", "provisioned"):
        metadata[f"users_{status}"] = statuses.get(status, 0)

    checks = [
        check_complete_listing(row_count, total_results, pages),
        check_no_large_drop(row_count, store, config),
    ]
    metadata["checks_passed"] = all(check.passed for check in checks)
    return MaterializeResult(metadata=metadata, check_results=checks)


def _extract_snapshot(context, qlik: QlikResource, store: TenantStore):
    writer = SnapshotWriter(store.new_snapshot_path())
    statuses: Counter[str] = Counter()
    pages = retries = 0
    total_results = None

    try:
        with qlik.get_client() as client:
            for page in client.iter_pages():
                writer.write_page(page.users, page.number)
                pages += 1
                retries += page.attempts - 1
                total_results = page.total_results
                statuses.update(str(user.get("status") or "unknown").lower() for user in page.users)
                if pages % PROGRESS_EVERY_PAGES == 0:
                    context.log.info(f"Fetched {pages} pages, {writer.row_count} users so far")
        path = writer.commit()
    except BaseException:
        writer.abort()
        raise

    return path, pages, retries, total_results, statuses


@multi_asset(
    specs=[
        AssetSpec(
            "new_users",
            deps=["qlik_users"],
            group_name=GROUP,
            kinds=KINDS,
            freshness_policy=FRESHNESS,
            owners=OWNERS,
            description=(
                "Users who joined the tenant since the last comparison: users of the newest "
                "qlik_users snapshot whose id is not in the baseline (the snapshot that the "
                "last successful comparison used). Invited users count as new when they are "
                "first listed; newest_created_at tells when the latest of them was created."
            ),
        ),
        AssetSpec(
            "activated_users",
            deps=["qlik_users"],
            group_name=GROUP,
            kinds=KINDS,
            freshness_policy=FRESHNESS,
            owners=OWNERS,
            description=(
                "Users who accepted their invite since the last comparison: status was "
                "'invited' in the baseline (the snapshot that the last successful comparison "
                "used) and is 'active' in the newest snapshot."
            ),
        ),
    ],
    name="user_changes",
    pool=POOL,
)
def user_changes(
    context: AssetExecutionContext, user_store: UserStoreResource
) -> Iterator[MaterializeResult]:
    """Compare the newest snapshot with the baseline, then make the newest the baseline."""
    run_id = context.run.run_id
    try:
        _check_instance_is_kept(context.instance)
        snapshot_path, tenant, tenant_url = _current_snapshot(context)
        store = user_store.for_tenant(tenant)
    except (SnapshotError, QlikError) as error:
        raise _fail(error) from None

    # NOTE: the tenant's lock is held from reading the baseline to moving it, so two runs
    # started together never compare against the same baseline and report the same users.
    with store.lock():
        try:
            comparison = compare_with_baseline(store, snapshot_path)
            changes_dir = store.changes_dir(run_id)
            new_path = _write_table(changes_dir / "new_users.parquet", comparison.new_users)
            activated_path = _write_table(
                changes_dir / "activated_users.parquet", comparison.activated_users
            )
        except (SnapshotError, AlertConfigError) as error:
            raise _fail(error) from None
        except OSError as error:
            raise _fail(_data_dir_error(user_store, error)) from None
        context.log.info(f"{comparison.note} ({tenant})")

        common = {
            "tenant": tenant,
            "tenant_url": MetadataValue.url(tenant_url),
            "snapshot": MetadataValue.path(str(snapshot_path)),
            "baseline": (
                MetadataValue.path(str(comparison.baseline.snapshot))
                if comparison.baseline
                else "none"
            ),
            "comparison": comparison.note,
            "dagster/column_schema": COLUMN_SCHEMA,
        }
        yield MaterializeResult(
            asset_key="new_users",
            metadata={
                **common,
                "path": MetadataValue.path(str(new_path)),
                "dagster/row_count": comparison.new_users.num_rows,
                "newest_created_at": newest_created_at(comparison.new_users),
                "preview": MetadataValue.md(preview_markdown(comparison.new_users)),
            },
        )
        # NOTE: the alert sensor reads activated_users events and expects new_users.parquet
        # beside this path, so keep both files in one folder and this event second.
        yield MaterializeResult(
            asset_key="activated_users",
            metadata={
                **common,
                "path": MetadataValue.path(str(activated_path)),
                "dagster/row_count": comparison.activated_users.num_rows,
                "new_users_count": comparison.new_users.num_rows,
                "preview": MetadataValue.md(preview_markdown(comparison.activated_users)),
            },
        )

        # The baseline moves only once both results are recorded: a crash before this line
        # makes the next run report these changes again rather than lose them.
        if comparison.moves_baseline:
            store.write_baseline(snapshot_path, run_id)
        deleted = store.prune(user_store.snapshots_to_keep())
        if deleted:
            context.log.info(f"Deleted {len(deleted)} old snapshots and result folders")


def _check_instance_is_kept(instance) -> None:
    """Refuse to move the baseline in a Dagster instance that is thrown away after the run.

    The alert sensor finds changes in the instance's event log. A run recorded in a temporary
    instance would move the baseline while its changes are never alerted.
    """
    root = Path(instance.root_directory) if instance.root_directory else None
    temporary = root is not None and root.name.startswith(TMP_DAGSTER_HOME_PREFIX)
    if instance.is_ephemeral or temporary:
        raise SnapshotError(
            "This run uses a temporary Dagster instance because DAGSTER_HOME is not set, so the "
            "alert sensor would never see its changes while the baseline moved past them. Set "
            "DAGSTER_HOME to the instance folder the daemon uses (make dev uses "
            "$PWD/.dagster_home) and run again"
        )


def _current_snapshot(context: AssetExecutionContext) -> tuple[Path, str, str]:
    """Find the snapshot of this run's qlik_users, or else the newest one whose checks passed."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("qlik_users")), limit=50, ascending=False
    ).records
    same_run = [record for record in records if record.run_id == context.run.run_id]
    complete = [
        record
        for record in records
        if record.asset_materialization.metadata.get(
            "checks_passed", MetadataValue.bool(True)
        ).value
    ]
    candidates = same_run or complete
    if not candidates:
        raise SnapshotError(
            "qlik_users has no recent materialization whose checks passed, so there is no "
            "snapshot to compare; materialize qlik_users first (or all three assets together)"
        )
    metadata = candidates[0].asset_materialization.metadata
    return (
        Path(metadata["path"].value),
        str(metadata["tenant"].value),
        str(metadata["tenant_url"].value),
    )


def _write_table(path: Path, table: pa.Table) -> Path:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_atomically(path, sink.getvalue().to_pybytes())
    return path


def newest_created_at(users: pa.Table) -> str:
    """When the most recently created of `users` was created, as shown in the asset's metadata."""
    if users.num_rows == 0:
        return "no new users"
    newest = pc.max(users["created_at"]).as_py()
    return newest.strftime("%Y-%m-%d %H:%M UTC") if newest else "unknown"


def preview_markdown(users: pa.Table, max_rows: int = PREVIEW_ROWS) -> str:
    """Render the first users (name, email, status, created) as a markdown table, escaped."""
    if users.num_rows == 0:
        return "No users."
    lines = ["| name | email | status | created (UTC) |", "|---|---|---|---|"]
    columns = ["name", "email", "status", "created_at"]
    for user in users.slice(0, max_rows).select(columns).to_pylist():
        created = user["created_at"].strftime("%Y-%m-%d %H:%M") if user["created_at"] else ""
        cells = [user["name"], user["email"], user["status"], created]
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |")
    if users.num_rows > max_rows:
        lines.append(f"\n{users.num_rows - max_rows} more rows in the Parquet file.")
    return "\n".join(lines)


def _markdown_cell(value) -> str:
    if value is None:
        return ""
    text = " ".join(str(value).split())
    for character in "\\|`*_[]<>#":
        text = text.replace(character, "\\" + character)
    return text[:120]
