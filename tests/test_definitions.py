"""The definitions load on a fresh machine and fail clearly on bad settings."""

import os
import subprocess
import sys

from dagster import DefaultScheduleStatus, DefaultSensorStatus

from tests.conftest import REPO

CLEAN_ENV = {key: value for key, value in os.environ.items() if not key.startswith("QLIK_")}


def load_in_subprocess(**variables):
    return subprocess.run(
        [sys.executable, "-c", "import pipelines.definitions"],
        cwd=REPO,
        env={**CLEAN_ENV, **variables},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_definitions_load_without_settings():
    from pipelines.definitions import defs

    job = defs.resolve_job_def("qlik_user_watch_job")
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert keys == {"qlik_users", "new_users", "activated_users"}
    assert defs.resolve_sensor_def("user_alert_sensor").default_status == (
        DefaultSensorStatus.RUNNING
    )
    schedule = defs.resolve_schedule_def("qlik_users_schedule")
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING


def test_definitions_validate_with_dagster_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "pipelines.definitions"],
        cwd=REPO,
        env={**CLEAN_ENV, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert result.returncode == 0, result.stderr


def test_schedule_follows_cron_and_timezone_variables():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pipelines.definitions import defs;"
            "s = defs.resolve_schedule_def('qlik_users_schedule');"
            "print(s.cron_schedule, s.execution_timezone)",
        ],
        cwd=REPO,
        env={
            **CLEAN_ENV,
            "QLIK_USERS_CRON": "*/15 6-18 * * 1-5",
            "QLIK_USERS_TIMEZONE": "Europe/Paris",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.stdout.strip() == "*/15 6-18 * * 1-5 Europe/Paris"


def test_malformed_cron_names_variable():
    result = load_in_subprocess(QLIK_USERS_CRON="every hour")

    assert result.returncode != 0
    assert "QLIK_USERS_CRON='every hour' is not a valid cron expression" in result.stderr


def test_unknown_timezone_names_variable():
    result = load_in_subprocess(QLIK_USERS_TIMEZONE="Mars/Olympus")

    assert "QLIK_USERS_TIMEZONE='Mars/Olympus' is not an IANA time zone" in result.stderr


def test_bad_sensor_interval_names_variable():
    result = load_in_subprocess(QLIK_ALERT_SENSOR_INTERVAL_SECONDS="soon")

    assert "QLIK_ALERT_SENSOR_INTERVAL_SECONDS='soon'" in result.stderr


def test_assets_go_stale_after_two_schedule_intervals():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        policy = graph.get(key).freshness_policy
        assert policy.fail_window.to_timedelta().total_seconds() == 2 * 3600, key


def test_health_sensor_runs_by_default():
    from pipelines.definitions import defs

    sensor = defs.resolve_sensor_def("pipeline_health_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING


def test_owners_follow_variable():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pipelines.definitions import defs;"
            "g = defs.resolve_asset_graph();"
            "print(sorted(set(o for k in g.get_all_asset_keys() for o in g.get(k).owners)))",
        ],
        cwd=REPO,
        env={**CLEAN_ENV, "QLIK_USERS_OWNERS": "admin@example.com, team:bi-platform"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.stdout.strip() == "['admin@example.com', 'team:bi-platform']"


def test_invalid_owner_names_variable():
    result = load_in_subprocess(QLIK_USERS_OWNERS="bi platform")

    assert "QLIK_USERS_OWNERS has 'bi'" in result.stderr


def test_instance_limits_tenant_pool(dagster_home):
    from dagster import DagsterInstance
    from dagster._core.instance.config import PoolGranularity

    from pipelines.definitions import defs

    with DagsterInstance.get() as instance:
        pools = instance.get_concurrency_config().pool_config
    graph = defs.resolve_asset_graph()

    assert pools.pool_granularity == PoolGranularity.RUN
    assert pools.default_pool_limit == 1
    for key in graph.get_all_asset_keys():
        assert graph.get(key).pools == {"qlik_tenant"}, key
