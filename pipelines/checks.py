"""Checks on each users extract, run before the comparison may use it."""

from dagster import AssetCheckResult, AssetCheckSeverity, Config
from pydantic import Field

from pipelines.snapshots import SnapshotError, TenantStore


class ExtractConfig(Config):
    """Run settings of qlik_users, for an operator launching a run by hand."""

    max_drop_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Maximum share of the baseline's users that may disappear before the "
        "no_large_drop check stops the run (0.2 = 20%).",
    )
    allow_large_drop: bool = Field(
        default=False,
        description="Set to true for one run to accept a larger drop, e.g. after a real "
        "clean-up of users in the tenant.",
    )


def check_complete_listing(
    row_count: int, total_results: int | None, pages: int
) -> AssetCheckResult:
    if total_results is None:
        return AssetCheckResult(
            check_name="complete_listing",
            passed=True,
            severity=AssetCheckSeverity.WARN,
            description="The tenant did not report totalResults, so the count was not checked.",
        )
    passed = row_count == total_results
    return AssetCheckResult(
        check_name="complete_listing",
        passed=passed,
        metadata={"users_read": row_count, "total_results": total_results, "pages": pages},
        description=None
        if passed
        else (
            f"Read {row_count} users in {pages} pages but the tenant reports {total_results}, "
            f"so the listing ended early after page {pages} or changed while paging. The "
            "comparison is skipped and the baseline kept; the next run tries again"
        ),
    )


def check_no_large_drop(row_count: int, store: TenantStore, config: ExtractConfig):
    try:
        baseline = store.read_baseline()
        if baseline is None:
            return AssetCheckResult(
                check_name="no_large_drop",
                passed=True,
                description="No baseline yet, nothing to compare with.",
            )
        previous = store.read_baseline_snapshot(baseline, columns=["id"]).num_rows
    except SnapshotError as error:
        return AssetCheckResult(check_name="no_large_drop", passed=False, description=str(error))

    drop = (previous - row_count) / previous if previous else 0.0
    passed = drop <= config.max_drop_share or config.allow_large_drop
    return AssetCheckResult(
        check_name="no_large_drop",
        passed=passed,
        metadata={"baseline_users": previous, "users": row_count, "drop_share": round(drop, 4)},
        description=None
        if passed
        else (
            f"{previous - row_count} of {previous} users ({drop:.0%}) are gone since the "
            f"baseline, more than max_drop_share={config.max_drop_share:.0%}. If the tenant "
            "really lost them, launch qlik_users once with run config "
            "ops.qlik_users.config.allow_large_drop: true"
        ),
    )
