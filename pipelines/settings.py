"""Settings read when the definitions load: the schedule and the sensor interval.

Dagster needs these to build the schedule and the sensor, so an invalid value stops the code
location from loading, with a message that names the variable.
"""

import datetime as dt
import os
import zoneinfo

from dagster._core.definitions.utils import is_valid_owner
from dagster._utils.schedules import cron_string_iterator, is_valid_cron_string

CRON_VARIABLE = "QLIK_USERS_CRON"
TIMEZONE_VARIABLE = "QLIK_USERS_TIMEZONE"
INTERVAL_VARIABLE = "QLIK_ALERT_SENSOR_INTERVAL_SECONDS"
DEFAULT_CRON = "0 * * * *"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_INTERVAL_SECONDS = 30
OWNERS_VARIABLE = "QLIK_USERS_OWNERS"


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


def sensor_interval_seconds() -> int:
    """QLIK_ALERT_SENSOR_INTERVAL_SECONDS, read when the definitions load."""
    text = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not text:
        return DEFAULT_INTERVAL_SECONDS
    try:
        seconds = int(text)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ValueError(
            f"{INTERVAL_VARIABLE}={text!r} is not a positive whole number of seconds; "
            f"set it to e.g. {DEFAULT_INTERVAL_SECONDS} or remove it"
        )
    return seconds


def longest_schedule_gap(cron: str, timezone: str, ticks: int = 400) -> dt.timedelta:
    """Return the maximum time between two runs of the schedule over its next `ticks` runs."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    times = cron_string_iterator(start, cron, timezone)
    previous = next(times)
    longest = dt.timedelta(0)
    for _ in range(ticks):
        current = next(times)
        longest = max(longest, current - previous)
        previous = current
    return longest


def asset_owners() -> list[str]:
    """QLIK_USERS_OWNERS: emails or `team:name` entries, separated by commas or spaces."""
    owners = os.environ.get(OWNERS_VARIABLE, "").replace(",", " ").split()
    for owner in owners:
        if not is_valid_owner(owner):
            raise ValueError(
                f"{OWNERS_VARIABLE} has {owner!r}, which is neither an email address nor "
                "'team:<name>'; use e.g. 'admin@example.com team:bi-platform'"
            )
    return owners
