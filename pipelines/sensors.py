"""The sensor that turns each comparison with changes into one alert per channel."""

import json
from pathlib import Path

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from pipelines.alerts import Alert, DeliveryResult, build_alert, build_counts_alert
from pipelines.health import SensorHealth
from pipelines.resources import AlertResource, UserStoreResource
from pipelines.settings import sensor_interval_seconds
from pipelines.snapshots import SnapshotError, read_snapshot

RECORDS_PER_TICK = 100


class AlertDeliveryError(Exception):
    """At least one channel could not take an alert; it is retried on a later tick."""


def tenant_display_name(metadata) -> str:
    """Return the tenant's host, and port if set, as in the browser's address bar."""
    url = metadata.get("tenant_url")
    if url is None:
        return str(metadata["tenant"].value)
    return str(url.value).split("://", 1)[-1].rstrip("/")


def enqueue_alerts(
    context: SensorEvaluationContext, user_store: UserStoreResource, alerts: AlertResource
) -> tuple[int, int]:
    """Queue an alert for every comparison with changes since the cursor; return counts."""
    cursor = json.loads(context.cursor) if context.cursor else {}
    result = context.instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=AssetKey("activated_users"), after_storage_id=cursor.get("storage_id")
        ),
        limit=RECORDS_PER_TICK,
        ascending=True,
    )

    seen = queued = 0
    for record in result.records:
        seen += 1
        cursor["storage_id"] = record.storage_id
        metadata = record.asset_materialization.metadata
        activated_count = metadata["dagster/row_count"].value
        new_count = metadata["new_users_count"].value
        if not (new_count or activated_count):
            continue

        queue = alerts.queue(user_store.for_tenant(str(metadata["tenant"].value)))
        if queue.has(record.run_id):
            continue
        alert = _build_run_alert(context, metadata, record.run_id, alerts.max_listed_users)
        if queue.enqueue(record.run_id, alert):
            queued += 1
            context.log.info(f"Queued alert for run {record.run_id}: {alert.title}")

    context.update_cursor(json.dumps(cursor))
    return seen, queued


def _build_run_alert(context, metadata, run_id: str, max_listed: int) -> Alert:
    tenant = tenant_display_name(metadata)
    changes_dir = Path(metadata["path"].value).parent
    try:
        return build_alert(
            tenant,
            read_snapshot(changes_dir / "new_users.parquet"),
            read_snapshot(changes_dir / "activated_users.parquet"),
            changes_dir=changes_dir,
            max_listed=max_listed,
        )
    except SnapshotError as error:
        context.log.warning(
            f"Alert of run {run_id} is sent with counts only, since its user lists are "
            f"unreadable: {error}"
        )
        return build_counts_alert(
            tenant,
            metadata["new_users_count"].value,
            metadata["dagster/row_count"].value,
            run_id,
            f"{changes_dir} is missing or unreadable",
        )


@sensor(
    name="user_alert_sensor",
    minimum_interval_seconds=sensor_interval_seconds(),
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Sends one alert per run that found new or activated users, to every URL in "
        "QLIK_ALERT_URLS (or to the outbox file in the data dir). It sends alerts itself and "
        "never requests runs, so its ticks show '0 runs requested'; each tick's message counts "
        "the alerts queued and delivered. A channel that fails is retried on later ticks until "
        "it takes the alert, and the tick shows the failure."
    ),
)
def user_alert_sensor(
    context: SensorEvaluationContext, user_store: UserStoreResource, alerts: AlertResource
):
    health = SensorHealth(user_store.health_dir())
    try:
        result = deliver_alerts(context, user_store, alerts)
    except Exception as error:
        health.record_failure(error)
        raise
    health.record_success()
    return result


def deliver_alerts(
    context: SensorEvaluationContext, user_store: UserStoreResource, alerts: AlertResource
) -> SkipReason:
    channels = alerts.channels()
    seen, queued = enqueue_alerts(context, user_store, alerts)

    delivered, failed = [], []
    for store in user_store.tenants():
        for result in alerts.queue(store).deliver_pending(channels):
            record_delivery(context, result)
            if result.delivered:
                delivered.append(result)
                context.log.info(f"Delivered alert of run {result.run_id} to {result.channel}")
            else:
                failed.append(result)
                context.log.warning(
                    f"Could not deliver alert of run {result.run_id} to {result.channel}: "
                    f"{result.detail}; retrying on a later tick"
                )

    if failed:
        details = "; ".join(f"{r.channel} (run {r.run_id}): {r.detail}" for r in failed[:5])
        raise AlertDeliveryError(
            f"{len(failed)} alert deliveries failed and will be retried: {details}"
        )
    if not channels and delivered:
        outboxes = sorted({r.channel for r in delivered})
        return SkipReason(
            f"QLIK_ALERT_URLS is not set, so {len(delivered)} alerts were appended to "
            f"{', '.join(outboxes)}"
        )
    return SkipReason(
        f"Checked {seen} new comparisons, queued {queued} alerts, delivered {len(delivered)}"
    )


def record_delivery(context: SensorEvaluationContext, result: DeliveryResult) -> None:
    """Record a delivery attempt as an observation of activated_users, shown in its history."""
    context.instance.report_runless_asset_event(
        AssetObservation(
            asset_key="activated_users",
            metadata={
                "alert_of_run": result.run_id,
                "channel": result.channel,
                "outcome": "delivered" if result.delivered else "failed",
                "detail": result.detail,
            },
        )
    )
