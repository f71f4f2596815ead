"""Alert delivery per channel: a channel that is down never blocks or doubles another."""

import json

import pytest

from pipelines.sensors import AlertDeliveryError
from tests.conftest import SensorDriver, baseline_then_changes


def test_mail_down_webhook_up_each_gets_one(pipeline_env, tenant, instance, smtp_server, webhook):
    pipeline_env.setenv("QLIK_ALERT_URLS", f"{smtp_server.url} {webhook.url()}")
    baseline_then_changes(tenant, instance, ("Wanda Webhook", "wanda@example.com"))
    driver = SensorDriver(instance)
    smtp_server.stop()

    for _ in range(3):
        with pytest.raises(AlertDeliveryError) as raised:
            driver.tick()
        assert "mailto://127.0.0.1" in str(raised.value)
    smtp_server.start()
    driver.tick()
    driver.tick()

    assert len(webhook.bodies) == 1
    assert len(smtp_server.messages) == 1
    payload = json.loads(webhook.bodies[0])
    assert "- Wanda Webhook <wanda@example.com>" in payload["message"]
    assert payload["title"] == "1 new user in " + tenant.url.split("://")[1]


@pytest.mark.parametrize("mode", ["429", "500", "slow"])
def test_failing_webhook_retried_until_it_takes_alert(
    pipeline_env, tenant, instance, webhook, mode
):
    webhook.mode = mode
    webhook.delay = 1.5
    pipeline_env.setenv("QLIK_ALERT_URLS", webhook.url(rto="0.5"))
    baseline_then_changes(tenant, instance, ("Retry Rita", "rita@example.com"))
    driver = SensorDriver(instance)

    with pytest.raises(AlertDeliveryError):
        driver.tick()
    webhook.mode = "ok"
    driver.tick()
    driver.tick()

    assert len(webhook.bodies) == 1
    assert "Retry Rita" in json.loads(webhook.bodies[0])["message"]


def test_backoff_delays_retries_of_failing_channel(pipeline_env, tenant, instance, webhook):
    from pipelines.resources import AlertResource

    webhook.mode = "500"
    pipeline_env.setenv("QLIK_ALERT_URLS", webhook.url())
    baseline_then_changes(tenant, instance, ("Bea Backoff", "bea@example.com"))
    driver = SensorDriver(instance)
    driver.resources["alerts"] = AlertResource(retry_backoff_seconds=3600)

    with pytest.raises(AlertDeliveryError):
        driver.tick()
    attempts_after_failure = webhook.attempts
    driver.tick()

    assert attempts_after_failure == 1
    assert webhook.attempts == 1


def test_webhook_payload_keeps_hostile_names_literal(pipeline_env, tenant, instance, webhook):
    pipeline_env.setenv("QLIK_ALERT_URLS", webhook.url())
    baseline_then_changes(
        tenant,
        instance,
        ("<img src=x onerror=alert(1)> <!channel>", "xss@example.com"),
        ("Eve\r\nBcc: victim@example.com", "eve@example.com"),
        ("Tab\tand\x07bell", "ctl@example.com"),
    )

    SensorDriver(instance).tick()

    message = json.loads(webhook.bodies[0])["message"]
    lines = message.splitlines()
    assert "- <img src=x onerror=alert(1)> <!channel> <xss@example.com>" in lines
    assert "- Eve Bcc: victim@example.com <eve@example.com>" in lines
    assert "- Tab and bell <ctl@example.com>" in lines


def test_hostile_name_cannot_add_mail_header(pipeline_env, tenant, instance, smtp_server):
    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    baseline_then_changes(
        tenant, instance, ("Mallory\r\nBcc: victim@example.com", "mallory@example.com")
    )

    SensorDriver(instance).tick()

    message = smtp_server.messages[0]
    assert message["Bcc"] is None
    assert "victim@example.com" not in str(message["To"])
