"""The whole job on a real Dagster instance against the simulated tenant."""

import json
import os
import stat
import subprocess
import sys

import pyarrow.parquet as pq
from dagster import AssetKey

from tests.conftest import API_KEY, FAST_RETRIES, run_pipeline

# The README's CLI path: materialize qlik_users and everything downstream of it.
MATERIALIZE_COMMAND = [
    sys.executable,
    "-m",
    "dagster",
    "asset",
    "materialize",
    "-m",
    "pipelines.definitions",
    "--select",
    "qlik_users*",
]


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
    assert new["newest_created_at"].value.endswith("UTC")
    console = latest_metadata(instance, "qlik_users")["management_console_users"].value
    assert console == f"{tenant.url}/console/users"
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


def run_with_config(instance, **extract_config):
    from pipelines.definitions import defs

    job = defs.resolve_job_def("qlik_user_watch_job")
    return job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"qlik_users": {"config": extract_config}}},
    )


def check_results(result):
    return {
        evaluation.check_name: evaluation.passed
        for evaluation in (
            event.event_specific_data
            for event in result.all_events
            if event.event_type_value == "ASSET_CHECK_EVALUATION"
        )
    }


def test_large_drop_blocks_comparison_until_allowed(pipeline_env, tenant, instance, data_dir):
    users = tenant.seed_users(100)
    assert run_pipeline(instance).success
    baseline_file = next(data_dir.glob("*/baseline.json"))
    baseline_before = baseline_file.read_text()
    for user in users[:30]:
        tenant.delete_user(user["id"])
    newcomer = tenant.add_user("New During Drop", "drop@example.com")

    blocked = run_pipeline(instance)

    assert not blocked.success
    assert check_results(blocked) == {"complete_listing": True, "no_large_drop": False}
    assert baseline_file.read_text() == baseline_before
    assert latest_metadata(instance, "new_users")["dagster/row_count"].value == 0

    allowed = run_with_config(instance, allow_large_drop=True)

    assert allowed.success
    assert ids_in(instance, "new_users") == {newcomer["id"]}
    assert baseline_file.read_text() != baseline_before


def test_partial_listing_never_becomes_baseline(pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(350)
    assert run_pipeline(instance).success
    baseline_before = next(data_dir.glob("*/baseline.json")).read_text()
    tenant.inject_fault("partial", page=2, times=1)

    partial = run_pipeline(instance)
    baseline_after_partial = next(data_dir.glob("*/baseline.json")).read_text()
    healthy = run_pipeline(instance)

    assert check_results(partial)["complete_listing"] is False
    assert not partial.success
    assert baseline_after_partial == baseline_before
    assert healthy.success
    assert latest_metadata(instance, "new_users")["dagster/row_count"].value == 0


def test_old_snapshots_pruned_but_baseline_kept(pipeline_env, tenant, instance, data_dir):
    pipeline_env.setenv("QLIK_USERS_KEEP_SNAPSHOTS", "2")
    tenant.seed_users(20)
    for _ in range(4):
        assert run_pipeline(instance).success

    tenant_dir = next(data_dir.glob("*/baseline.json")).parent
    snapshots = sorted((tenant_dir / "snapshots").glob("users-*.parquet"))
    baseline = json.loads((tenant_dir / "baseline.json").read_text())["snapshot"]
    assert len(snapshots) == 2
    assert (tenant_dir / baseline).exists()
    assert len(list((tenant_dir / "changes").iterdir())) == 2


def test_invalid_keep_snapshots_names_variable(pipeline_env, tenant, instance):
    pipeline_env.setenv("QLIK_USERS_KEEP_SNAPSHOTS", "all")
    tenant.seed_users(5)

    result = run_pipeline(instance)

    failure = [event for event in result.all_events if event.is_step_failure][0]
    assert "QLIK_USERS_KEEP_SNAPSHOTS='all'" in str(failure.event_specific_data.error)


def test_data_dir_is_owner_only(pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(5)
    assert run_pipeline(instance).success

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for folder in data_dir.iterdir():
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_two_runs_at_once_report_each_user_once(pipeline_env, tenant, dagster_home, data_dir):
    """Two CLI runs started together: the lock lets one compare, the other finds nothing new."""
    tenant.seed_users(150)
    command = MATERIALIZE_COMMAND
    env = {**os.environ}
    assert subprocess.run(command, env=env, capture_output=True, timeout=180).returncode == 0
    added = {tenant.add_user(f"Racer {i}", f"racer{i}@example.com")["id"] for i in range(3)}

    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    codes = [run.wait(timeout=180) for run in runs]

    assert codes == [0, 0]
    tenant_dir = next(data_dir.glob("*/baseline.json")).parent
    reported = []
    for folder in (tenant_dir / "changes").iterdir():
        reported += pq.read_table(folder / "new_users.parquet")["id"].to_pylist()
    assert sorted(reported) == sorted(added)


def test_cli_run_without_dagster_home_keeps_baseline(pipeline_env, tenant, tmp_path, data_dir):
    """A temporary instance would hide the run from the alert sensor, so nothing may move."""
    tenant.seed_users(20)
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"}
    command = MATERIALIZE_COMMAND

    result = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )

    assert result.returncode != 0
    assert "DAGSTER_HOME is not set" in result.stdout + result.stderr
    assert list(data_dir.glob("*/baseline.json")) == []


def test_every_folder_and_file_is_owner_only(pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(20)
    assert run_pipeline(instance).success
    tenant.add_user("Private Pat", "pat@example.com")
    assert run_pipeline(instance).success
    from tests.conftest import SensorDriver

    SensorDriver(instance).tick()

    paths = [data_dir, *data_dir.rglob("*")]
    assert any(path.name == "outbox.txt" for path in paths)
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} has mode {oct(mode)}"


def test_run_log_shows_progress_and_retries(pipeline_env, tenant, instance):
    tenant.seed_users(1050)
    tenant.inject_fault("503", page=4, times=1)

    result = run_pipeline(instance, FAST_RETRIES)

    assert result.success
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    progress = [m for m in messages if m.startswith("Fetched 10 pages")]
    retries = [m for m in messages if "Retrying page 4" in m]
    assert progress == ["Fetched 10 pages, 1000 users so far"]
    assert len(retries) == 1
    assert "503" in retries[0]
    assert not [m for m in messages if "HTTP Request" in m or m.startswith("GET ")]
