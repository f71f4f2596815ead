"""The health sensor: alarms when extraction goes quiet or the alert sensor keeps failing."""

import datetime as dt
import json

from dagster import build_sensor_context

from pipelines.health import SensorHealth, pipeline_health_sensor
from pipelines.resources import AlertResource, UserStoreResource
from tests.conftest import run_pipeline


def tick(instance, cursor=None):
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "user_store": UserStoreResource(),
            "alerts": AlertResource(retry_backoff_seconds=0),
        },
    )
    result = pipeline_health_sensor(context)
    return result, context.cursor


def long_ago(hours: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)).isoformat()


def test_healthy_after_recent_extraction(pipeline_env, tenant, instance, smtp_server):
    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    tenant.seed_users(5)
    assert run_pipeline(instance).success

    result, _ = tick(instance, json.dumps({"first_seen": long_ago(10)}))

    assert result.skip_message.startswith("Healthy")
    assert smtp_server.messages == []


def test_no_extraction_for_two_intervals_alarms_once(pipeline_env, instance, smtp_server):
    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    cursor = json.dumps({"first_seen": long_ago(3)})

    first, cursor = tick(instance, cursor)
    second, _ = tick(instance, cursor)

    assert "no successful users extraction" in first.skip_message
    assert "no successful users extraction" in second.skip_message
    assert len(smtp_server.messages) == 1
    assert "never" in smtp_server.messages[0].get_body().get_content()


def test_no_alarm_before_two_intervals(pipeline_env, instance, smtp_server):
    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)

    result, cursor = tick(instance)

    assert result.skip_message.startswith("Healthy")
    assert "first_seen" in json.loads(cursor)
    assert smtp_server.messages == []


def test_failing_alert_sensor_alarms(pipeline_env, tenant, instance, smtp_server, data_dir):
    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    tenant.seed_users(5)
    assert run_pipeline(instance).success
    health = SensorHealth(data_dir / ".health")
    health.record_failure(RuntimeError("SMTP server refused the connection"))
    state = health.read()
    state["failing_since"] = long_ago(1)
    health.path.write_text(json.dumps(state))

    result, _ = tick(instance)

    assert "alert sensor keeps failing" in result.skip_message
    assert len(smtp_server.messages) == 1
    assert "SMTP server refused" in smtp_server.messages[0].get_body().get_content()


def test_no_alarm_without_alert_urls(pipeline_env, instance, data_dir):
    result, _ = tick(instance, json.dumps({"first_seen": long_ago(3)}))

    assert "no successful users extraction" in result.skip_message
    assert not list(data_dir.rglob("outbox.txt"))
