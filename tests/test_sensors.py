"""The alert sensor: one alert per run with changes, delivered once per channel."""

import pytest
from dagster import SkipReason

from pipelines.sensors import AlertDeliveryError
from tests.conftest import SensorDriver, baseline_then_changes, run_pipeline


def test_sensor_skips_when_no_changes(pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(10)
    assert run_pipeline(instance).success

    result = SensorDriver(instance).tick()

    assert isinstance(result, SkipReason)
    assert not list(data_dir.rglob("outbox.txt"))


def test_email_alert_lists_users_literally(pipeline_env, tenant, instance, smtp_server):
    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    tenant.seed_users(30)
    invitee = tenant.invite_user("Ines Invitee", "ines@example.com")
    assert run_pipeline(instance).success
    tenant.add_user("Zoë Ångström-Łukasz", "zoe@example.com")
    tenant.add_user("Doe, Jane", "jane@example.com")
    tenant.add_user("<b>Bold</b> & <script>x</script>", "html@example.com")
    tenant.activate_user(invitee["id"])
    assert run_pipeline(instance).success

    SensorDriver(instance).tick()

    assert len(smtp_server.messages) == 1
    message = smtp_server.messages[0]
    body = message.get_body(preferencelist=("plain",)).get_content()
    lines = [line.strip() for line in body.splitlines()]
    assert message["Subject"].startswith("3 new users and 1 activated user in 127.0.0.1")
    assert "- Zoë Ångström-Łukasz <zoe@example.com>" in lines
    assert "- Doe, Jane <jane@example.com>" in lines
    assert "- <b>Bold</b> & <script>x</script> <html@example.com>" in lines
    assert "- Ines Invitee <ines@example.com>" in lines
    assert message.get_body(preferencelist=("html",)) is None


def test_sensor_does_not_realert_same_run(pipeline_env, tenant, instance, smtp_server):
    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    baseline_then_changes(tenant, instance, ("Ann", "ann@example.com"))
    driver = SensorDriver(instance)

    driver.tick()
    driver.tick()
    SensorDriver(instance).tick()  # a fresh cursor, as after losing the sensor state

    assert len(smtp_server.messages) == 1


def test_one_alert_per_run(pipeline_env, tenant, instance, smtp_server):
    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    baseline_then_changes(tenant, instance, ("Ann", "ann@example.com"))
    tenant.add_user("Ben", "ben@example.com")
    assert run_pipeline(instance).success

    SensorDriver(instance).tick()

    subjects = sorted(message["Subject"] for message in smtp_server.messages)
    assert len(subjects) == 2
    assert all(subject.startswith("1 new user in") for subject in subjects)


def test_mail_outage_then_exactly_one_delivery(pipeline_env, tenant, instance, smtp_server):
    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    baseline_then_changes(tenant, instance, ("Olga Outage", "olga@example.com"))
    driver = SensorDriver(instance)
    smtp_server.stop()

    for _ in range(2):
        with pytest.raises(AlertDeliveryError) as raised:
            driver.tick()
        assert "127.0.0.1" in str(raised.value)

    smtp_server.start()
    driver.tick()
    driver.tick()

    assert len(smtp_server.messages) == 1
    assert "Olga Outage" in smtp_server.messages[0].get_body().get_content()


def test_outbox_used_without_alert_urls(pipeline_env, tenant, instance, data_dir):
    baseline_then_changes(tenant, instance, ("Otto Outbox", "otto@example.com"))

    result = SensorDriver(instance).tick()

    outboxes = list(data_dir.rglob("outbox.txt"))
    assert len(outboxes) == 1
    assert "- Otto Outbox <otto@example.com>" in outboxes[0].read_text()
    assert isinstance(result, SkipReason)
    assert str(outboxes[0]) in result.skip_message


def test_alert_url_secret_absent_from_errors_and_state(
    pipeline_env, tenant, instance, data_dir, smtp_server
):
    secret_url = (
        f"mailto://watcher:S3cretSmtpPass@127.0.0.1:{smtp_server.port}"
        "?from=w@example.com&to=a@example.com"
    )
    pipeline_env.setenv("QLIK_ALERT_URLS", secret_url)
    baseline_then_changes(tenant, instance, ("Sam", "sam@example.com"))
    smtp_server.stop()

    with pytest.raises(AlertDeliveryError) as raised:
        SensorDriver(instance).tick()

    assert "S3cretSmtpPass" not in str(raised.value)
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert b"S3cretSmtpPass" not in path.read_bytes(), path


def test_deliveries_recorded_as_observations(pipeline_env, tenant, instance, smtp_server):
    from dagster import AssetKey

    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    baseline_then_changes(tenant, instance, ("Oona", "oona@example.com"))
    driver = SensorDriver(instance)
    smtp_server.stop()
    with pytest.raises(AlertDeliveryError):
        driver.tick()
    smtp_server.start()
    driver.tick()

    records = instance.fetch_observations(AssetKey("activated_users"), limit=100).records
    outcomes = sorted(record.asset_observation.metadata["outcome"].value for record in records)
    assert outcomes == ["delivered", "failed"]
    channel = records[0].asset_observation.metadata["channel"].value
    assert channel == f"mailto://127.0.0.1:{smtp_server.port}"


def test_failing_ticks_recorded_for_health(pipeline_env, tenant, instance, smtp_server, data_dir):
    from pipelines.health import SensorHealth

    pipeline_env.setenv("QLIK_ALERT_URLS", smtp_server.url)
    baseline_then_changes(tenant, instance, ("Hal", "hal@example.com"))
    driver = SensorDriver(instance)
    smtp_server.stop()
    with pytest.raises(AlertDeliveryError):
        driver.tick()
    failing = SensorHealth(data_dir / ".health").read()
    smtp_server.start()
    driver.tick()
    recovered = SensorHealth(data_dir / ".health").read()

    assert failing["failing_since"]
    assert "1 alert deliveries failed" in failing["last_error"]
    assert recovered["failing_since"] is None
