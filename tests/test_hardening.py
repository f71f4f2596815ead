"""Bad state on disk, odd settings and odd data: each fails clearly or recovers, losing nothing."""

import json
import shutil
import stat
import subprocess

import pytest
from dagster import AssetKey

from pipelines.alerts import AlertConfigError, clean_text, parse_alert_channels
from pipelines.qlik import QlikClient, QlikConfigError, parse_tenant_url, tenant_key
from pipelines.sensors import AlertDeliveryError
from tests.conftest import SensorDriver, run_pipeline


def step_error(result) -> str:
    return str(
        [event for event in result.all_events if event.is_step_failure][0].event_specific_data.error
    )


def tenant_dir(data_dir):
    return next(data_dir.glob("*/baseline.json")).parent


def test_api_key_with_line_break_rejected_without_request(tenant):
    key = "eyJhbGciOiJFUzM4NCJ9.SECRETPART\n.sig-rest"

    with pytest.raises(QlikConfigError) as raised:
        QlikClient(tenant.url, key)

    assert "QLIK_API_KEY contains" in str(raised.value)
    assert "SECRETPART" not in str(raised.value)
    assert tenant.requests == []


def test_non_ascii_api_key_rejected():
    with pytest.raises(QlikConfigError):
        QlikClient("https://acme.eu.qlikcloud.com", "ключ-123")


def test_port_zero_rejected():
    with pytest.raises(QlikConfigError) as raised:
        parse_tenant_url("http://127.0.0.1:0")

    assert "port 0" in str(raised.value)


def test_ipv6_spellings_share_one_tenant_folder():
    short = tenant_key(parse_tenant_url("http://[::1]:8080"))
    long = tenant_key(parse_tenant_url("http://[0:0:0:0:0:0:0:1]:8080"))

    assert short == long
    assert not short.startswith("-")


def test_mailto_with_unencoded_at_in_password_rejected():
    with pytest.raises(AlertConfigError) as raised:
        parse_alert_channels(
            "mailto://user:p@ss@127.0.0.1:2525?from=a@example.com&to=b@example.com"
        )

    assert "%40" in str(raised.value)
    assert "ss@127" not in str(raised.value)


def test_invalid_alert_url_gives_apprise_reason():
    with pytest.raises(AlertConfigError) as raised:
        parse_alert_channels("mailto://127.0.0.1:2525?to=b@example.com")

    assert "From" in str(raised.value)


def test_bidi_overrides_removed_from_names():
    assert clean_text("\u202egnp.exe") == "gnp.exe"
    assert clean_text("a\u2066b\u2069c\u200f") == "a b c"


def test_out_of_range_invite_expiry_kept_out(pipeline_env, tenant, instance):
    tenant.seed_users(10)
    assert run_pipeline(instance).success
    tenant.add_user("Milli Seconds", "ms@example.com", status="invited", inviteExpiry=1767225600000)
    tenant.add_user("Huge Expiry", "huge@example.com", status="invited", inviteExpiry=10**20)

    result = run_pipeline(instance)

    assert result.success
    event = instance.get_latest_materialization_event(AssetKey("new_users"))
    assert event.asset_materialization.metadata["dagster/row_count"].value == 2


def test_status_case_folded_for_activation(pipeline_env, tenant, instance):
    tenant.seed_users(10)
    invited = tenant.add_user("Case Invited", "case@example.com", status="invited")
    assert run_pipeline(instance).success
    tenant.set_status(invited["id"], "active")

    assert run_pipeline(instance).success

    event = instance.get_latest_materialization_event(AssetKey("activated_users"))
    assert event.asset_materialization.metadata["dagster/row_count"].value == 1


def test_missing_baseline_snapshot_says_how_to_recover(pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(10)
    assert run_pipeline(instance).success
    folder = tenant_dir(data_dir)
    baseline = json.loads((folder / "baseline.json").read_text())["snapshot"]
    (folder / baseline).unlink()

    result = run_pipeline(instance)

    assert not result.success
    checks = [
        event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    drop = [check for check in checks if check.check_name == "no_large_drop"][0]
    assert drop.passed is False
    assert "delete" in drop.description
    assert "baseline.json" in drop.description

    (folder / "baseline.json").unlink()
    assert run_pipeline(instance).success


def test_baseline_outside_tenant_folder_rejected(pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(10)
    assert run_pipeline(instance).success
    baseline_file = tenant_dir(data_dir) / "baseline.json"
    record = json.loads(baseline_file.read_text())
    record["snapshot"] = "/etc/passwd"
    baseline_file.write_text(json.dumps(record))

    result = run_pipeline(instance)

    assert not result.success
    assert "not inside" in step_error(result) or "not inside" in str(result.all_events)


def test_lock_path_taken_by_folder_fails_clearly(pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(10)
    assert run_pipeline(instance).success
    lock = tenant_dir(data_dir) / ".lock"
    lock.unlink()
    lock.mkdir()

    result = run_pipeline(instance)

    assert "lock file" in step_error(result)
    assert "remove whatever is at that path" in step_error(result)


def test_data_dir_inside_a_file_names_variable(pipeline_env, tenant, instance, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    pipeline_env.setenv("QLIK_USERS_DATA_DIR", str(blocker / "data"))
    tenant.seed_users(5)

    result = run_pipeline(instance)

    assert "QLIK_USERS_DATA_DIR" in step_error(result)


def test_pruned_changes_still_alert_after_outage(pipeline_env, tenant, instance, webhook):
    pipeline_env.setenv("QLIK_USERS_KEEP_SNAPSHOTS", "1")
    pipeline_env.setenv("QLIK_ALERT_URLS", webhook.url())
    tenant.seed_users(10)
    assert run_pipeline(instance).success
    tenant.add_user("Outage Olivia", "olivia@example.com")
    assert run_pipeline(instance).success
    driver = SensorDriver(instance)
    webhook.mode = "500"

    for _ in range(3):
        with pytest.raises(AlertDeliveryError):
            driver.tick()
        assert run_pipeline(instance).success
    webhook.mode = "ok"
    driver.tick()
    driver.tick()

    assert len(webhook.bodies) == 1
    assert "Outage Olivia" in json.loads(webhook.bodies[0])["message"]


def test_changes_deleted_before_tick_sends_counts(
    pipeline_env, tenant, instance, data_dir, webhook
):
    pipeline_env.setenv("QLIK_ALERT_URLS", webhook.url())
    tenant.seed_users(10)
    assert run_pipeline(instance).success
    tenant.add_user("Gone Gus", "gus@example.com")
    assert run_pipeline(instance).success
    shutil.rmtree(tenant_dir(data_dir) / "changes")

    SensorDriver(instance).tick()

    payload = json.loads(webhook.bodies[0])
    assert payload["title"].startswith("1 new user in")
    assert "could not be read" in payload["message"]


def test_corrupt_pending_alert_does_not_block_others(
    pipeline_env, tenant, instance, data_dir, webhook
):
    pipeline_env.setenv("QLIK_ALERT_URLS", webhook.url())
    tenant.seed_users(10)
    assert run_pipeline(instance).success
    webhook.mode = "500"
    driver = SensorDriver(instance)
    for name in ("First Fay", "Second Sid"):
        tenant.add_user(name, f"{name.split()[0].lower()}@example.com")
        assert run_pipeline(instance).success
        with pytest.raises(AlertDeliveryError):
            driver.tick()
    pending = sorted(
        (tenant_dir(data_dir) / "alerts" / "pending").glob("*.json"),
        key=lambda path: path.stat().st_mtime,
    )
    pending[0].write_text("{trunc")
    webhook.mode = "ok"

    with pytest.raises(AlertDeliveryError) as raised:
        driver.tick()
    driver.tick()

    messages = sorted(json.loads(body)["message"] for body in webhook.bodies)
    assert str(pending[0]) in str(raised.value)
    assert pending[0].with_suffix(".invalid").exists()
    # The sensor rebuilds the set-aside alert from the run's results, so both arrive once.
    assert len(messages) == 2
    assert "First Fay" in messages[0]
    assert "Second Sid" in messages[1]


def test_unsaveable_pending_record_never_resent(pipeline_env, tenant, instance, data_dir, webhook):
    pipeline_env.setenv("QLIK_ALERT_URLS", webhook.url())
    tenant.seed_users(10)
    assert run_pipeline(instance).success
    tenant.add_user("Frozen Fred", "fred@example.com")
    assert run_pipeline(instance).success
    webhook.mode = "500"
    driver = SensorDriver(instance)
    with pytest.raises(AlertDeliveryError):
        driver.tick()
    pending_dir = tenant_dir(data_dir) / "alerts" / "pending"
    if subprocess.run(["chattr", "+i", str(pending_dir)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here, so the folder cannot be made read-only")
    webhook.mode = "ok"

    try:
        for _ in range(3):
            with pytest.raises(Exception):
                driver.tick()
    finally:
        subprocess.run(["chattr", "-i", str(pending_dir)], check=True)

    assert webhook.bodies == []
    driver.tick()
    assert len(webhook.bodies) == 1


def test_health_records_keep_data_dir_owner_only(pipeline_env, instance, data_dir):
    SensorDriver(instance).tick()

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_invalid_owner_rejected_with_dagster_rule():
    from pipelines.settings import asset_owners

    for value in ("@", "a@", "team:"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("QLIK_USERS_OWNERS", value)
            with pytest.raises(ValueError) as raised:
                asset_owners()
        assert "QLIK_USERS_OWNERS" in str(raised.value)
