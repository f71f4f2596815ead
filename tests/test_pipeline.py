"""The whole job on a real Dagster instance against the simulated tenant."""

import pyarrow.parquet as pq
from dagster import AssetKey

from tests.conftest import API_KEY, run_pipeline


def latest_metadata(instance, key):
    event = instance.get_latest_materialization_event(AssetKey(key))
    return event.asset_materialization.metadata


def ids_in(instance, key):
    path = latest_metadata(instance, key)["path"].value
    return set(pq.read_table(path, columns=["id"])["id"].to_pylist())


def test_first_run_sets_baseline_without_changes(pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(250)

    result = run_pipeline(instance)

    assert result.success
    users = latest_metadata(instance, "qlik_users")
    assert users["dagster/row_count"].value == 250
    assert users["pages"].value == 3
    assert users["total_results"].value == 250
    assert "dagster/column_schema" in users
    new = latest_metadata(instance, "new_users")
    assert new["dagster/row_count"].value == 0
    assert "First comparison" in new["comparison"].value
    assert latest_metadata(instance, "activated_users")["dagster/row_count"].value == 0
    tenant_dir = data_dir / f"127.0.0.1_{tenant.url.rsplit(':', 1)[1]}"
    assert (tenant_dir / "baseline.json").exists()
    assert len(list((tenant_dir / "snapshots").glob("users-*.parquet"))) == 1


def test_second_run_finds_new_and_activated(pipeline_env, tenant, instance):
    tenant.seed_users(120)
    invitee = tenant.invite_user("Invited Person", "invitee@example.com")
    assert run_pipeline(instance).success

    ann = tenant.add_user("Ann Example", "ann@example.com")
    bob = tenant.invite_user("Bob Example", "bob@example.com")
    tenant.activate_user(invitee["id"])
    assert run_pipeline(instance).success

    assert ids_in(instance, "new_users") == {ann["id"], bob["id"]}
    assert ids_in(instance, "activated_users") == {invitee["id"]}
    new = latest_metadata(instance, "new_users")
    assert new["dagster/row_count"].value == 2
    assert "Ann Example" in new["preview"].value
    assert latest_metadata(instance, "activated_users")["new_users_count"].value == 2


def test_failed_run_between_healthy_runs_loses_nothing(pipeline_env, tenant, instance):
    tenant.seed_users(150)
    invitee = tenant.invite_user("Pending Person", "pending@example.com")
    assert run_pipeline(instance).success

    first = tenant.add_user("Added Before Failure", "before@example.com")
    tenant.activate_user(invitee["id"])
    tenant.inject_fault("401", page=2, times=1)
    failed = run_pipeline(instance)
    assert not failed.success

    second = tenant.add_user("Added After Failure", "after@example.com")
    assert run_pipeline(instance).success

    assert ids_in(instance, "new_users") == {first["id"], second["id"]}
    assert ids_in(instance, "activated_users") == {invitee["id"]}


def test_failed_extract_leaves_no_snapshot(pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(250)
    tenant.inject_fault("503", page=3, times=50)
    pipeline_env.setenv("QLIK_USERS_DATA_DIR", str(data_dir))

    from pipelines.definitions import defs

    job = defs.resolve_job_def("qlik_user_watch_job")
    result = job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={
            "resources": {"qlik": {"config": {"max_attempts": 2, "wait_initial_seconds": 0.01}}}
        },
    )

    assert not result.success
    assert list(data_dir.rglob("*.parquet")) == []
    assert list(data_dir.rglob("*.tmp")) == []
    failure = [event for event in result.all_events if event.is_step_failure][0]
    assert "Page 3" in str(failure.event_specific_data.error)


def test_missing_api_key_fails_run_naming_variable(pipeline_env, tenant, instance):
    pipeline_env.delenv("QLIK_API_KEY")

    result = run_pipeline(instance)

    assert not result.success
    failure = [event for event in result.all_events if event.is_step_failure][0]
    assert "QLIK_API_KEY is not set" in str(failure.event_specific_data.error)
    assert tenant.requests == []


def test_malformed_tenant_url_fails_run_naming_variable(pipeline_env, instance):
    pipeline_env.setenv("QLIK_TENANT_URL", "http://acme.eu.qlikcloud.com")

    result = run_pipeline(instance)

    failure = [event for event in result.all_events if event.is_step_failure][0]
    assert "QLIK_TENANT_URL" in str(failure.event_specific_data.error)
    assert "https://" in str(failure.event_specific_data.error)


def test_api_key_absent_from_logs_and_files(pipeline_env, tenant, instance, data_dir, dagster_home):
    tenant.seed_users(120)
    assert run_pipeline(instance).success
    tenant.add_user("Key Check", "key@example.com")
    tenant.inject_fault("429", page=2, times=1, retry_after=0)
    tenant.inject_fault("401", page=1, times=1)
    assert not run_pipeline(instance).success
    assert run_pipeline(instance).success

    logs = "".join(
        str(entry.dagster_event) + str(entry.user_message)
        for run in instance.get_runs()
        for entry in instance.all_logs(run.run_id)
    )
    assert "Page" in logs or "401" in logs
    assert API_KEY not in logs
    for folder in (data_dir, dagster_home):
        for path in folder.rglob("*"):
            if path.is_file():
                assert API_KEY.encode() not in path.read_bytes(), path
