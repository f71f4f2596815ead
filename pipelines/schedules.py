"""The schedule that extracts the users and compares them with the baseline."""

import os
import zoneinfo

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    define_asset_job,
)
from dagster._utils.schedules import is_valid_cron_string

from pipelines.assets import GROUP

CRON_VARIABLE = "QLIK_USERS_CRON"
TIMEZONE_VARIABLE = "QLIK_USERS_TIMEZONE"
DEFAULT_CRON = "0 * * * *"
DEFAULT_TIMEZONE = "UTC"

qlik_user_watch_job = define_asset_job(
    "qlik_user_watch_job",
    selection=AssetSelection.groups(GROUP),
    description="Extract the tenant's users, then find new and activated users.",
)


def schedule_settings() -> tuple[str, str]:
    """QLIK_USERS_CRON and QLIK_USERS_TIMEZONE, validated when the definitions load."""
    cron = os.environ.get(CRON_VARIABLE, "").strip() or DEFAULT_CRON
    if not is_valid_cron_string(cron):
        raise ValueError(
            f"{CRON_VARIABLE}={cron!r} is not a valid cron expression; use five fields, "
            f"for example {DEFAULT_CRON!r} for hourly"
        )

    timezone = os.environ.get(TIMEZONE_VARIABLE, "").strip() or DEFAULT_TIMEZONE
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{TIMEZONE_VARIABLE}={timezone!r} is not an IANA time zone; use a name such as "
            "'UTC' or 'Europe/Paris'"
        ) from None
    return cron, timezone


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
