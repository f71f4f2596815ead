"""The Dagster UI, driven in headless Chromium: lineage, Materialize all, results and automation.

The simulated tenant and `dagster dev` (webserver and daemon) run as subprocesses on loopback
ports, with a temporary DAGSTER_HOME and data dir. Each test saves a screenshot: under
docs/images/ for the README when UPDATE_SCREENSHOTS=1 is set, and in a temporary folder otherwise,
so that `make test` leaves the tree clean. Every test sets up the state it checks, so any one can
run alone.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Response, expect, sync_playwright

from tests.conftest import API_KEY, REPO, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these, Chromium keeps trying to reach Google services on a machine without network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGES = (
    REPO / "docs" / "images"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "qlik-user-watch-screenshots"
)
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")

# Upper bounds, in seconds unless named _MS. Measured on a 2-core machine: `dagster dev` responds
# after about 11 s, a run of the three assets takes about 3 s and the module 55 to 90 s.
STARTUP_TIMEOUT = 120
RUN_TIMEOUT = 90
SENSOR_TICK_TIMEOUT = 60
STOP_TIMEOUT = 15
UI_TIMEOUT_MS = 30_000
POLL_INTERVAL = 0.5

ASSETS = ("qlik_users", "new_users", "activated_users")
DOWNSTREAM_OF_QLIK_USERS = ("new_users", "activated_users")
NEW_USERS = (
    ("Ada Lovelace", "ada.lovelace@example.com"),
    ("Grace Hopper", "grace.hopper@example.com"),
)
RUN_END_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not IN_CI,
        reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium); CI installs it",
    ),
]


class GraphQLError(AssertionError):
    """The webserver's GraphQL API returned errors."""


@dataclass
class DagsterUI:
    """A running `dagster dev`, with clients for its GraphQL API and for the simulated tenant."""

    url: str
    tenant_url: str
    graphql_client: httpx.Client
    tenant_client: httpx.Client

    def query(self, query: str, **variables) -> dict:
        response = self.graphql_client.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}
        )
        response.raise_for_status()
        payload = response.json()
        if payload.get("errors"):
            raise GraphQLError(f"GraphQL query failed: {payload['errors']}")
        return payload["data"]

    def add_tenant_user(self, name: str, email: str, status: str = "active") -> dict:
        response = self.tenant_client.post(
            f"{self.tenant_url}/_simulator/users",
            json={"name": name, "email": email, "status": status},
        )
        assert response.status_code == 201, response.text
        return response.json()

    def activate_invited_tenant_user(self) -> dict:
        response = self.tenant_client.get(f"{self.tenant_url}/_simulator/users")
        response.raise_for_status()
        invited = [user for user in response.json()["data"] if user["status"] == "invited"]
        assert invited, "the simulated tenant has no invited user left to activate"
        response = self.tenant_client.post(
            f"{self.tenant_url}/_simulator/users/{invited[0]['id']}/activate"
        )
        assert response.status_code == 200, response.text
        return response.json()

    def materializations(self, asset: str, limit: int = 10) -> list[dict]:
        """Return the newest materializations of an asset first, with their metadata."""
        data = self.query(
            """
            query Materializations($path: [String!]!, $limit: Int!) {
              assetOrError(assetKey: {path: $path}) {
                __typename
                ... on Asset {
                  assetMaterializations(limit: $limit) {
                    runId
                    metadataEntries {
                      label
                      ... on IntMetadataEntry { intValue }
                      ... on MarkdownMetadataEntry { mdStr }
                    }
                  }
                }
              }
            }
            """,
            path=[asset],
            limit=limit,
        )
        if data["assetOrError"]["__typename"] != "Asset":
            return []
        return data["assetOrError"]["assetMaterializations"]

    def wait_for_run(self, run_id: str) -> dict:
        """Poll the run until it ends and return its status and assets. Fail after RUN_TIMEOUT."""
        query = """
        query RunStatus($runId: ID!) {
          runOrError(runId: $runId) { ... on Run { status assetSelection { path } } }
        }
        """
        deadline = time.monotonic() + RUN_TIMEOUT
        run = {}
        while time.monotonic() < deadline:
            run = self.query(query, runId=run_id)["runOrError"]
            if run.get("status") in RUN_END_STATUSES:
                return run
            time.sleep(POLL_INTERVAL)
        pytest.fail(
            f"run {run_id} did not end within {RUN_TIMEOUT} s; last status {run.get('status')}"
        )

    def run_failure_messages(self, run_id: str) -> list[str]:
        data = self.query(
            """
            query RunLogs($runId: ID!) {
              logsForRun(runId: $runId) {
                ... on EventConnection { events { __typename ... on MessageEvent { message } } }
              }
            }
            """,
            runId=run_id,
        )
        events = data["logsForRun"].get("events", [])
        return [event["message"] for event in events if "Failure" in event["__typename"]]

    def instigator_status(self, kind: str, name: str) -> str:
        """Return RUNNING or STOPPED for a schedule or a sensor, as `kind` names it."""
        selector = {
            "repositoryLocationName": "qlik_user_watch",
            "repositoryName": "__repository__",
            f"{kind}Name": name,
        }
        data = self.query(
            f"""
            query Status($selector: {kind.capitalize()}Selector!) {{
              {kind}OrError({kind}Selector: $selector) {{
                __typename
                ... on {kind.capitalize()} {{ {kind}State {{ status }} }}
              }}
            }}
            """,
            selector=selector,
        )
        result = data[f"{kind}OrError"]
        assert result["__typename"] == kind.capitalize(), result
        return result[f"{kind}State"]["status"]

    def sensor_tick_count(self, name: str) -> int:
        data = self.query(
            """
            query Ticks($selector: SensorSelector!) {
              sensorOrError(sensorSelector: $selector) {
                ... on Sensor { sensorState { ticks(limit: 5) { status } } }
              }
            }
            """,
            selector={
                "repositoryLocationName": "qlik_user_watch",
                "repositoryName": "__repository__",
                "sensorName": name,
            },
        )
        return len(data["sensorOrError"]["sensorState"]["ticks"])


def stop_process_group(process: subprocess.Popen) -> None:
    """Send SIGTERM to the process group, then SIGKILL whatever is left after STOP_TIMEOUT."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    # `dagster dev` handles SIGTERM like SIGINT, so it ignores both when it starts with SIGINT
    # ignored (as a background job does). Its children can outlive it, so the group always gets
    # a SIGKILL as well.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=STOP_TIMEOUT)


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for_tenant_url(process: subprocess.Popen, log_path: Path) -> str:
    pattern = re.compile(r"^Simulated Qlik tenant at (http://\S+)$", re.MULTILINE)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        match = pattern.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            pytest.fail(
                f"the simulated tenant exited with {process.returncode}:\n{log_tail(log_path)}"
            )
        time.sleep(0.1)
    pytest.fail(f"the simulated tenant printed no URL within {STARTUP_TIMEOUT} s")


def wait_for_code_location(
    process: subprocess.Popen, client: httpx.Client, url: str, log_path: Path
) -> None:
    """Wait until the webserver responds and has loaded the code location, or fail with its log."""
    query = """
    {
      workspaceOrError {
        ... on Workspace {
          locationEntries {
            name
            loadStatus
            locationOrLoadError { __typename ... on PythonError { message } }
          }
        }
      }
    }
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{log_tail(log_path)}")
        try:
            response = client.post(f"{url}/graphql", json={"query": query})
            entries = response.json()["data"]["workspaceOrError"]["locationEntries"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            entries = []
        for entry in entries:
            if entry["loadStatus"] != "LOADED":
                continue
            location = entry["locationOrLoadError"]
            if location and location["__typename"] == "PythonError":
                pytest.fail(f"code location {entry['name']} failed to load: {location['message']}")
            return
        time.sleep(POLL_INTERVAL)
    pytest.fail(
        f"dagster dev did not serve the code location within {STARTUP_TIMEOUT} s:\n"
        f"{log_tail(log_path)}"
    )


def schedule_cron_away_from_now() -> str:
    """Return a daily cron expression 12 hours from now (UTC).

    With the default hourly cron, a test that crosses the full hour gets an extra scheduled run,
    which reports the two new users before the run launched from the UI can.
    """
    hour = (datetime.now(timezone.utc).hour + 12) % 24
    return f"0 {hour} * * *"


@pytest.fixture(scope="module")
def tenant_url(tmp_path_factory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("tenant") / "tenant.log"
    command = [
        sys.executable,
        "-m",
        "pipelines.simulator",
        "--port",
        "0",
        "--seed-users",
        "250",
        "--api-key",
        API_KEY,
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield wait_for_tenant_url(process, log_path)
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory, tenant_url) -> Iterator[DagsterUI]:
    root = tmp_path_factory.mktemp("dagster")
    home = root / "dagster_home"
    home.mkdir()
    instance_config = (REPO / "dagster.yaml").read_text()
    if not re.search(r"^nux:", instance_config, re.MULTILINE):
        # Without this, the first page of a local UI opens a newsletter dialog over the graph.
        instance_config += "\nnux:\n  enabled: false\n"
    (home / "dagster.yaml").write_text(instance_config)

    # `dagster dev` loads ./.env over the environment, so running it in the repo would pick up
    # a developer's real tenant, API key and alert URLs. It runs in an empty folder instead,
    # and PYTHONPATH makes it import this checkout's pipelines package.
    workdir = root / "cwd"
    workdir.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QLIK_") and key != "DAGSTER_PROJECT_ENV_FILE_PATHS"
    }
    env.update(
        DAGSTER_HOME=str(home),
        PYTHONPATH=str(REPO),
        QLIK_TENANT_URL=tenant_url,
        QLIK_API_KEY=API_KEY,
        QLIK_USERS_DATA_DIR=str(root / "data"),
        QLIK_ALERT_SENSOR_INTERVAL_SECONDS="5",
        QLIK_USERS_CRON=schedule_cron_away_from_now(),
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(REPO / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log_path = root / "dagster-dev.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # trust_env=False: requests to 127.0.0.1 must never go through a proxy from the environment.
    graphql_client = httpx.Client(timeout=30, trust_env=False)
    tenant_client = httpx.Client(
        timeout=10, trust_env=False, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    try:
        wait_for_code_location(process, graphql_client, url, log_path)
        yield DagsterUI(url, tenant_url, graphql_client, tenant_client)
    finally:
        graphql_client.close()
        tenant_client.close()
        stop_process_group(process)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory, dagster_ui):
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            base_url=dagster_ui.url,
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        # The pages may load only from loopback servers; anything else is cut off.
        context.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), lambda route: route.abort())
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context) -> Iterator[Page]:
    page = browser_context.new_page()
    try:
        yield page
    finally:
        page.close()


def save_screenshot(page: Page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=IMAGES / name, animations="disabled")


def scroll_to_top(locator) -> None:
    """Scroll the element to the top of its scrolling panel, which is not the window."""
    locator.evaluate("element => element.scrollIntoView({block: 'start'})")


def is_launch_response(response: Response) -> bool:
    return response.url.endswith("/graphql?op=LaunchPipelineExecution")


def click_materialize_all(page: Page, dagster_ui: DagsterUI) -> str:
    """Click Materialize all on the global lineage page, wait for the run and return its id."""
    page.goto("/asset-groups")
    button = page.get_by_role("button", name="Materialize all")
    with page.expect_response(is_launch_response, timeout=UI_TIMEOUT_MS) as launch:
        button.click()
    result = launch.value.json()["data"]["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = result["run"]["id"]
    expect(page.get_by_text(f"Launched run {run_id[:8]}")).to_be_visible(timeout=UI_TIMEOUT_MS)

    run = dagster_ui.wait_for_run(run_id)
    assert run["status"] == "SUCCESS", dagster_ui.run_failure_messages(run_id)
    assert {key["path"][0] for key in run["assetSelection"]} == set(ASSETS)
    return run_id


def metadata_value(materialization: dict, label: str):
    for entry in materialization["metadataEntries"]:
        if entry["label"] == label:
            return entry.get("intValue", entry.get("mdStr"))
    raise KeyError(f"no metadata entry {label!r} in {materialization['metadataEntries']}")


def lineage_links(page: Page, heading: str, other_heading: str):
    """Return the asset links listed under one heading of an asset page's Lineage section."""
    column = (
        page.locator("div")
        .filter(has=page.get_by_text(heading, exact=True))
        .filter(has_not=page.get_by_text(other_heading, exact=True))
        .last
    )
    return column.get_by_role("link")


def test_materialize_all_reports_new_users(page, dagster_ui):
    if not dagster_ui.materializations("qlik_users", limit=1):
        # The first run only sets the baseline, so the new users need a second run.
        click_materialize_all(page, dagster_ui)
    for name, email in NEW_USERS:
        dagster_ui.add_tenant_user(name, email)

    run_id = click_materialize_all(page, dagster_ui)

    latest = dagster_ui.materializations("new_users", limit=1)[0]
    assert latest["runId"] == run_id
    assert metadata_value(latest, "dagster/row_count") == len(NEW_USERS)

    page.goto("/assets/new_users")
    latest_run_link = page.locator(f'a[href^="/runs/{run_id}"]').first
    expect(latest_run_link).to_be_visible(timeout=UI_TIMEOUT_MS)
    row_count = (
        page.locator("div")
        .filter(has=page.get_by_text("Row count", exact=True))
        .filter(has_not=page.get_by_text("Latest materialization", exact=True))
        .last
    )
    expect(row_count).to_have_text(re.compile(rf"Row count\s*{len(NEW_USERS)}$"))
    preview = page.get_by_role("row").filter(
        has=page.get_by_role("cell", name="preview", exact=True)
    )
    expect(preview).to_have_count(1)
    for name, email in NEW_USERS:
        expect(preview).to_contain_text(name)
        expect(preview).to_contain_text(email)

    # Folding the column table, which sits between the status and the metadata, keeps both in view.
    page.get_by_role("button", name="Columns").click()
    page.set_viewport_size({"width": 1400, "height": 1400})
    scroll_to_top(page.get_by_text("Status", exact=True))
    save_screenshot(page, "new-users-asset.png")


def test_qlik_users_history_plots(page, dagster_ui):
    # A plot needs a few points. Each extra run also activates an invited user, so that the
    # users_active and users_invited lines move.
    while len(dagster_ui.materializations("qlik_users", limit=3)) < 3:
        dagster_ui.activate_invited_tenant_user()
        click_materialize_all(page, dagster_ui)

    page.goto("/assets/qlik_users")
    page.get_by_role("button", name="Plots").click()
    metadata_heading = page.get_by_text("Metadata", exact=True)
    for label in ("dagster/row_count", "users_active", "users_invited", "retries"):
        expect(page.get_by_text(label, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)

    page.set_viewport_size({"width": 1400, "height": 1300})
    scroll_to_top(metadata_heading)
    save_screenshot(page, "qlik-users-history.png")


def test_asset_graph_shows_lineage(page, dagster_ui):
    data = dagster_ui.query("{ assetNodes { assetKey { path } dependencyKeys { path } } }")
    nodes = {node["assetKey"]["path"][0]: node for node in data["assetNodes"]}
    assert set(nodes) == set(ASSETS)
    for asset in DOWNSTREAM_OF_QLIK_USERS:
        assert nodes[asset]["dependencyKeys"] == [{"path": ["qlik_users"]}]
    assert nodes["qlik_users"]["dependencyKeys"] == []

    page.goto("/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible(timeout=UI_TIMEOUT_MS)
    graph = page.locator("svg").filter(has=page.get_by_text("qlik_users", exact=True))
    for asset in ASSETS:
        expect(graph.get_by_text(asset, exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    # Each node shows "Loading..." until its latest event and checks have arrived.
    expect(graph.get_by_text("Loading...")).to_have_count(0, timeout=UI_TIMEOUT_MS)
    save_screenshot(page, "asset-graph.png")

    page.goto("/assets/qlik_users")
    downstream = lineage_links(page, "Downstream assets", "Upstream assets")
    expect(downstream).to_have_count(len(DOWNSTREAM_OF_QLIK_USERS), timeout=UI_TIMEOUT_MS)
    for asset in DOWNSTREAM_OF_QLIK_USERS:
        expect(downstream.filter(has_text=asset)).to_have_count(1)
    expect(lineage_links(page, "Upstream assets", "Downstream assets")).to_have_count(0)

    for asset in DOWNSTREAM_OF_QLIK_USERS:
        page.goto(f"/assets/{asset}")
        upstream = lineage_links(page, "Upstream assets", "Downstream assets")
        expect(upstream).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(upstream).to_contain_text("qlik_users")
        expect(lineage_links(page, "Downstream assets", "Upstream assets")).to_have_count(0)


def test_automation_shows_sensor_and_schedule_running(page, dagster_ui):
    assert dagster_ui.instigator_status("schedule", "qlik_users_schedule") == "RUNNING"
    assert dagster_ui.instigator_status("sensor", "user_alert_sensor") == "RUNNING"

    # A tick proves that the daemon evaluates the sensor, not only that it is switched on.
    deadline = time.monotonic() + SENSOR_TICK_TIMEOUT
    while dagster_ui.sensor_tick_count("user_alert_sensor") == 0:
        assert time.monotonic() < deadline, f"no sensor tick within {SENSOR_TICK_TIMEOUT} s"
        time.sleep(POLL_INTERVAL)

    page.goto("/automation")
    for name, other_name in (
        ("qlik_users_schedule", "user_alert_sensor"),
        ("user_alert_sensor", "qlik_users_schedule"),
    ):
        # The outermost block that lists this automation but not the other one is its row.
        row = (
            page.locator("div")
            .filter(has=page.get_by_role("link", name=name))
            .filter(has_not=page.get_by_role("link", name=other_name))
            .filter(has=page.get_by_role("checkbox"))
            .first
        )
        expect(row).to_be_visible(timeout=UI_TIMEOUT_MS)
        # Each row has a selection checkbox (unchecked) and the running switch (checked).
        expect(row.get_by_role("checkbox", checked=True)).to_have_count(1)

    page.set_viewport_size({"width": 1400, "height": 420})
    save_screenshot(page, "automation.png")
