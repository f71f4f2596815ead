"""The schedule that extracts the users and compares them with the baseline."""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    define_asset_job,
)

from pipelines.assets import GROUP
from pipelines.settings import schedule_settings

qlik_user_watch_job = define_asset_job(
    "qlik_user_watch_job",
    selection=AssetSelection.groups(GROUP),
    description="Extract the tenant's users, then find new and activated users.",
)


def build_schedule() -> ScheduleDefinition:
    cron, timezone = schedule_settings()
    return ScheduleDefinition(
        name="qlik_users_schedule",
        job=qlik_user_watch_job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            f"Extracts the tenant's users and compares them with the baseline on '{cron}' "
            f"({timezone}); set QLIK_USERS_CRON and QLIK_USERS_TIMEZONE to change it."
        ),
    )
