"""Secrets never leave the environment: not in logs, run config, metadata, files or errors."""

import logging

import pytest

from pipelines.resources import AlertResource, QlikResource
from pipelines.sensors import AlertDeliveryError
from tests.conftest import API_KEY, FAST_RETRIES, SensorDriver, run_pipeline

SMTP_PASSWORD = "Smtp-Pa55-4e8b2c"
WEBHOOK_TOKEN = "hook-7f3a91d2c4b8"
SECRETS = (API_KEY, SMTP_PASSWORD, WEBHOOK_TOKEN)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} found in {where}"


def scan_files(*folders):
    scanned = 0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                for secret in SECRETS:
                    assert secret.encode() not in content, f"{secret!r} found in {path}"
                scanned += 1
    return scanned


def test_secrets_absent_after_failing_and_healthy_runs(
    pipeline_env, tenant, instance, dagster_home, data_dir, smtp_server, webhook, caplog, capfd
):
    pipeline_env.setenv(
        "QLIK_ALERT_URLS",
        f"mailto://watch:{SMTP_PASSWORD}@127.0.0.1:{smtp_server.port}"
        f"?from=w@example.com&to=a@example.com {webhook.url(token=WEBHOOK_TOKEN)}",
    )
    caplog.set_level(logging.DEBUG)
    tenant.seed_users(150)
    assert run_pipeline(instance).success
    tenant.add_user("Secret Scan", "scan@example.com")

    failures = []
    for kind in ("reset", "401", "403", "foreign_next", "html_200"):
        tenant.inject_fault(kind, page=2, times=50)
        result = run_pipeline(instance, FAST_RETRIES)
        tenant.clear_faults()
        assert not result.success
        failures += [
            str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure
        ]
    assert run_pipeline(instance).success

    smtp_server.stop()
    webhook.mode = "500"
    with pytest.raises(AlertDeliveryError) as raised:
        SensorDriver(instance).tick()
    smtp_server.start()
    webhook.mode = "ok"
    SensorDriver(instance).tick()

    assert len(failures) == 5
    for failure in failures:
        assert_no_secret(failure, "a step failure")
    assert_no_secret(str(raised.value), "the sensor's error")
    assert_no_secret(caplog.text, "the Python logs")
    output = capfd.readouterr()
    assert_no_secret(output.out + output.err, "stdout and stderr")
    for run in instance.get_runs():
        assert_no_secret(str(run.run_config), f"the run config of {run.run_id}")
        for entry in instance.all_logs(run.run_id):
            assert_no_secret(str(entry), f"the event log of {run.run_id}")
    assert_no_secret(smtp_server.messages[0].as_string(), "the alert email")
    assert scan_files(dagster_home, data_dir) > 10


def test_resource_repr_hides_secrets():
    qlik = QlikResource(tenant_url="https://acme.eu.qlikcloud.com", api_key=API_KEY)
    alerts = AlertResource(urls=f"json://127.0.0.1:1/{WEBHOOK_TOKEN}")

    assert_no_secret(repr(qlik), "QlikResource's repr")
    assert_no_secret(repr(alerts), "AlertResource's repr")
