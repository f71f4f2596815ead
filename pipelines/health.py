"""Alarms about the pipeline itself: no recent extraction, or an alert sensor that keeps failing.

The freshness policies on the assets show staleness in the UI. This sensor also sends an alarm
to the alert channels, once per episode, because the UI may go unwatched for days.
"""

import datetime as dt
import json
import re
from pathlib import Path

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from pipelines.alerts import Alert, AlertQueue
from pipelines.resources import AlertResource, UserStoreResource
from pipelines.settings import longest_schedule_gap, schedule_settings
from pipelines.snapshots import write_atomically

HEALTH_INTERVAL_SECONDS = 300
# The alert sensor must fail this long in a row before an alarm goes out: one failed tick
# is retried anyway, and a mail server that is down for a minute is no news.
FAILING_ALARM_AFTER = dt.timedelta(minutes=15)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class SensorHealth:
    """The alert sensor's record of its own ticks: when it last worked and since when it fails."""

    def __init__(self, health_dir: Path):
        self.path = health_dir / "alert_sensor.json"

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def record_success(self) -> None:
        state = self.read()
        if state.get("failing_since") or not state.get("last_success"):
            state = {"last_success": _now().isoformat(), "failing_since": None}
            write_atomically(self.path, json.dumps(state).encode())

    def record_failure(self, error: Exception) -> None:
        state = self.read()
        state["failing_since"] = state.get("failing_since") or _now().isoformat()
        state["last_error"] = str(error)[:500]
        write_atomically(self.path, json.dumps(state).encode())


def find_problems(
    context: SensorEvaluationContext, user_store: UserStoreResource, first_seen: dt.datetime
) -> list[tuple[str, str, str]]:
    """Return (episode key, title, body) for each current problem."""
    problems = []
    now = _now()

    max_age = 2 * longest_schedule_gap(*schedule_settings())
    event = context.instance.get_latest_materialization_event(AssetKey("qlik_users"))
    last_success = dt.datetime.fromtimestamp(event.timestamp, dt.timezone.utc) if event else None
    if now - (last_success or first_seen) > max_age:
        since = last_success.strftime("%Y-%m-%d %H:%M UTC") if last_success else "never"
        problems.append(
            (
                f"stale-{int((last_success or first_seen).timestamp())}",
                "qlik-user-watch: no successful users extraction",
                f"The last successful extraction of the tenant's users was: {since}. That is "
                f"longer than {max_age} ago, twice the schedule's interval, so new users may go "
                "unreported. Check the failed runs of qlik_user_watch_job in the Dagster UI.\n",
            )
        )

    state = SensorHealth(user_store.health_dir()).read()
    failing_since = state.get("failing_since")
    if failing_since and now - dt.datetime.fromisoformat(failing_since) > FAILING_ALARM_AFTER:
        problems.append(
            (
                "alert-sensor-" + re.sub(r"\D", "", failing_since)[:14],
                "qlik-user-watch: alert sensor keeps failing",
                f"user_alert_sensor has failed on every tick since {failing_since}. Last error: "
                f"{state.get('last_error', 'unknown')}\nAlerts wait and are sent once it "
                "recovers; check its ticks in the Dagster UI (Automation).\n",
            )
        )
    return problems


@sensor(
    name="pipeline_health_sensor",
    minimum_interval_seconds=HEALTH_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Alarms on every QLIK_ALERT_URLS channel when no users extraction has succeeded for "
        "twice the schedule's interval, or when user_alert_sensor has failed for 15 minutes; "
        "one alarm per episode."
    ),
)
def pipeline_health_sensor(
    context: SensorEvaluationContext, user_store: UserStoreResource, alerts: AlertResource
):
    cursor = json.loads(context.cursor) if context.cursor else {}
    if "first_seen" not in cursor:
        cursor["first_seen"] = _now().isoformat()
        context.update_cursor(json.dumps(cursor))
    first_seen = dt.datetime.fromisoformat(cursor["first_seen"])

    problems = find_problems(context, user_store, first_seen)
    channels = alerts.channels()
    queue = AlertQueue(
        user_store.health_dir() / "alerts", backoff_seconds=alerts.retry_backoff_seconds
    )
    if channels:
        for key, title, body in problems:
            if queue.enqueue(key, Alert(title=title, body=body)):
                context.log.warning(f"Alarm: {title}")
        for result in queue.deliver_pending(channels):
            outcome = "delivered to" if result.delivered else "could not be delivered to"
            context.log.info(f"Alarm {result.run_id} {outcome} {result.channel}")

    if problems:
        return SkipReason("Problems found: " + "; ".join(title for _, title, _ in problems))
    return SkipReason("Healthy: recent extraction, alert sensor working")
