"""Fault matrix: each simulator fault kind at the first, a middle and the last page.

Every case seeds a tenant of 350 users, read 100 a page (4 pages), injects one fault and runs
the real client and `SnapshotWriter`, or the real Dagster job, against the simulated tenant on
127.0.0.1. A case must end in one of two ways:

- complete: the snapshot contains exactly the tenant's user ids, each once.
- failed: the message names the fault, the page and a next step, and no snapshot file appears.

`partial` is the exception: its shorter snapshot is written, and the blocking check
`complete_listing` must stop the comparison and keep the baseline.

With FAULT_MATRIX_REPORT=<path>, the module writes the totals and every observed outcome to that
JSON file. docs/reliability.md summarizes one such run.
"""

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey

from pipelines.checks import check_complete_listing
from pipelines.qlik import QlikClient, QlikError
from pipelines.snapshots import SnapshotError, SnapshotWriter, TenantStore
from tests.conftest import API_KEY, wait_for

USERS_PATH = "/api/v1/users"
USER_COUNT = 350
PAGE_SIZE = 100
PAGE_COUNT = 4
POSITIONS = {1: "first", 2: "middle", PAGE_COUNT: "last"}
MAX_ATTEMPTS = 3
PERSISTENT_TIMES = 50
DEFAULT_TIMEOUT_SECONDS = 5.0
# The `slow` fault delays the response by SLOW_DELAY_SECONDS, twice the client's read timeout.
SLOW_TIMEOUT_SECONDS = 0.5
SLOW_DELAY_SECONDS = 1.0
REPORT_VARIABLE = "FAULT_MATRIX_REPORT"

COMPLETE = "complete"
FAILED = "failed"
CHECK_FAILED = "check_failed"

# A failure message must contain one of these lowercase phrases, which name the next step.
NEXT_STEP_PHRASES = ("run again", "check ", "generate a new key", "give the owner", "report it")


@dataclass(frozen=True)
class FaultSpec:
    """A simulator fault kind, its options and what the client is expected to do with it."""

    kind: str
    options: dict
    retried: bool
    fault_words: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT_SECONDS


FAULTS = {
    "429_seconds": FaultSpec("429", {"retry_after": 0}, True, ("429",)),
    "429_http_date": FaultSpec(
        "429", {"retry_after": 1, "retry_after_http_date": True}, True, ("429",)
    ),
    "500": FaultSpec("500", {}, True, ("500",)),
    "502": FaultSpec("502", {}, True, ("502",)),
    "503": FaultSpec("503", {}, True, ("503",)),
    "504": FaultSpec("504", {}, True, ("504",)),
    "slow": FaultSpec(
        "slow", {"delay": SLOW_DELAY_SECONDS}, True, ("Timeout",), timeout=SLOW_TIMEOUT_SECONDS
    ),
    "reset": FaultSpec(
        "reset", {}, True, ("reset", "closed connection", "ReadError", "RemoteProtocolError")
    ),
    "truncated_json": FaultSpec("truncated_json", {}, True, ("not valid JSON",)),
    "invalid_json": FaultSpec("invalid_json", {}, True, ("not valid JSON",)),
    "html_200": FaultSpec("html_200", {}, True, ("not valid JSON",)),
    "missing_data": FaultSpec("missing_data", {}, True, ("no 'data'",)),
    "user_without_id": FaultSpec("user_without_id", {}, True, ("no 'id'",)),
    "duplicate_id": FaultSpec("duplicate_id", {}, False, ("appears twice",)),
    "empty_page": FaultSpec("empty_page", {}, False, ()),
    "repeat_next": FaultSpec("repeat_next", {}, False, ("already read",)),
    "foreign_next": FaultSpec("foreign_next", {}, False, ("not the tenant",)),
    "scheme_next": FaultSpec("scheme_next", {}, False, ("not the tenant",)),
    "partial": FaultSpec("partial", {}, False, ("the tenant reports",)),
    "401": FaultSpec("401", {}, False, ("401",)),
    "403": FaultSpec("403", {}, False, ("403",)),
}


@dataclass(frozen=True)
class MatrixCase:
    """One fault kind at one page, fired once or on every attempt."""

    label: str
    page: int
    persistence: str

    @property
    def spec(self) -> FaultSpec:
        return FAULTS[self.label]

    @property
    def times(self) -> int:
        return PERSISTENT_TIMES if self.persistence == "persistent" else 1

    @property
    def test_id(self) -> str:
        return f"{self.label}-page{self.page}-{self.persistence}"

    @property
    def expected(self) -> str:
        kind = self.spec.kind
        if kind == "partial":
            # The last page has no next link to drop, so the fault changes nothing there.
            return COMPLETE if self.page == PAGE_COUNT else CHECK_FAILED
        if kind == "empty_page":
            return COMPLETE
        if self.spec.retried:
            return FAILED if self.persistence == "persistent" else COMPLETE
        return FAILED

    @property
    def pages_needed(self) -> int:
        """Pages a healthy listing takes: `empty_page` inserts one page without users."""
        return PAGE_COUNT + 1 if self.spec.kind == "empty_page" else PAGE_COUNT

    @property
    def requests_for_fault_page(self) -> int:
        if not self.spec.retried:
            return 1
        return MAX_ATTEMPTS if self.persistence == "persistent" else 2

    def inject(self, tenant) -> None:
        tenant.inject_fault(self.spec.kind, page=self.page, times=self.times, **self.spec.options)


def matrix_params(cases):
    params = []
    for case in cases:
        params.append(pytest.param(case, id=case.test_id))
    return params


def build_extract_cases() -> list[MatrixCase]:
    cases = []
    for label, spec in FAULTS.items():
        # A fault the client does not retry ends the run at its first firing, so how many
        # times it would fire does not matter.
        persistences = ("transient", "persistent") if spec.retried else ("once",)
        for page in POSITIONS:
            for persistence in persistences:
                cases.append(MatrixCase(label, page, persistence))
    return cases


EXTRACT_CASES = build_extract_cases()
JOB_CASES = [
    MatrixCase("partial", 1, "once"),
    MatrixCase("partial", 2, "once"),
    # Cut after page 3, the snapshot has 300 users against 350 in the baseline, a 14% drop under
    # max_drop_share (20%). So complete_listing is the only failing check and must block alone.
    MatrixCase("partial", 3, "once"),
    MatrixCase("partial", PAGE_COUNT, "once"),
    MatrixCase("503", 2, "persistent"),
    MatrixCase("401", 2, "persistent"),
    MatrixCase("duplicate_id", 2, "once"),
    MatrixCase("429_seconds", 2, "transient"),
]

OBSERVATIONS: list[dict] = []


def summarize(observations: list[dict]) -> dict:
    """Count cases, runs and every way a run lost, invented or misreported users."""
    extracts = [entry for entry in observations if entry["layer"] == "client"]
    failures = [entry for entry in observations if entry["outcome"] == FAILED]
    return {
        "fault_kinds": len({entry["fault"] for entry in extracts}),
        "positions": len({entry["page"] for entry in extracts}),
        "fault_kind_positions": len({(entry["fault"], entry["page"]) for entry in extracts}),
        "extract_cases": len(extracts),
        "job_cases": len(observations) - len(extracts),
        "runs": sum(entry["runs"] for entry in observations),
        "outcomes": dict(Counter(f"{entry['layer']} {entry['outcome']}" for entry in observations)),
        "users_lost": sum(entry["users_lost"] for entry in observations),
        "extra_or_duplicate_ids": sum(entry.get("extra_or_duplicate_ids", 0) for entry in extracts),
        "spurious_new_users": sum(entry.get("spurious_new_users", 0) for entry in observations),
        "spurious_activated_users": sum(
            entry.get("spurious_activated_users", 0) for entry in observations
        ),
        "failures": len(failures),
        "failures_without_page": sum(not entry["message_names_page"] for entry in failures),
        "failures_without_fault": sum(not entry["message_names_fault"] for entry in failures),
        "failures_without_next_step": sum(
            not entry["message_names_next_step"] for entry in failures
        ),
    }


@pytest.fixture(scope="module", autouse=True)
def matrix_report():
    """Write the totals and every observation to the JSON file named by FAULT_MATRIX_REPORT."""
    yield
    target = os.environ.get(REPORT_VARIABLE)
    if target:
        report = {"totals": summarize(OBSERVATIONS), "observations": OBSERVATIONS}
        Path(target).write_text(json.dumps(report, indent=2) + "\n")


@dataclass
class ExtractResult:
    """The outcome of one extract, the ids in its snapshot and its failure message."""

    outcome: str
    ids: list[str]
    message: str


def run_extract(tenant, data_dir: Path, timeout: float) -> ExtractResult:
    """Read the listing into a snapshot as the qlik_users asset does, then check its count."""
    store = TenantStore(data_dir, "tenant")
    store.ensure()
    writer = SnapshotWriter(store.new_snapshot_path())
    total_results = None
    pages = 0
    try:
        with QlikClient(
            tenant.url,
            API_KEY,
            page_size=PAGE_SIZE,
            timeout=timeout,
            max_attempts=MAX_ATTEMPTS,
            wait_initial=0.01,
            wait_max=0.05,
        ) as client:
            for page in client.iter_pages():
                writer.write_page(page.users, page.number)
                total_results = page.total_results
                pages = page.number
        path = writer.commit()
    except (QlikError, SnapshotError) as error:
        writer.abort()
        return ExtractResult(FAILED, [], str(error))

    ids = pq.read_table(path, columns=["id"])["id"].to_pylist()
    check = check_complete_listing(len(ids), total_results, pages)
    if not check.passed:
        return ExtractResult(CHECK_FAILED, ids, check.description)
    return ExtractResult(COMPLETE, ids, "")


def user_ids(tenant) -> list[str]:
    return [user["id"] for user in tenant.users()]


def listing_requests(tenant) -> list[dict]:
    return [request for request in tenant.requests if request["path"] == USERS_PATH]


def snapshot_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.rglob("users-*.parquet"))


def temporary_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.rglob("*.tmp"))


def names_page(message: str, page: int) -> bool:
    """Return whether the message names the page, as "Page 2", "page 2" or "pages 1 and 2"."""
    return re.search(rf"\bpages? (?:\d+ and )?{page}\b", message, re.IGNORECASE) is not None


def names_fault(message: str, spec: FaultSpec) -> bool:
    return any(word in message for word in spec.fault_words)


def names_next_step(message: str) -> bool:
    return any(phrase in message.lower() for phrase in NEXT_STEP_PHRASES)


def wait_for_fault_page_requests(tenant, case: MatrixCase) -> None:
    """Wait until the fault page's requests are logged.

    The simulator logs a `slow` response only after its delay, so a request the client has
    already abandoned shows up in the log up to SLOW_DELAY_SECONDS later.
    """
    if case.spec.kind != "slow":
        return
    wait_for(
        lambda: (
            requests_per_page(listing_requests(tenant))[case.page] >= case.requests_for_fault_page
        ),
        timeout=SLOW_DELAY_SECONDS + 2.0,
    )


def requests_per_page(requests: list[dict]) -> Counter:
    return Counter(request["page"] for request in requests)


def assert_requests_bounded(requests: list[dict], case: MatrixCase) -> None:
    """Assert at most MAX_ATTEMPTS requests a page, and one a page plus MAX_ATTEMPTS - 1 in all."""
    per_page = requests_per_page(requests)
    assert max(per_page.values()) <= MAX_ATTEMPTS, per_page
    assert len(requests) <= case.pages_needed - 1 + MAX_ATTEMPTS, per_page

    fault_page_requests = per_page[case.page]
    if case.spec.kind == "slow":
        # A loaded machine can stall one more response past the short timeout.
        assert case.requests_for_fault_page <= fault_page_requests <= MAX_ATTEMPTS
    else:
        assert fault_page_requests == case.requests_for_fault_page, per_page


def assert_failure_message(message: str, case: MatrixCase) -> None:
    assert names_fault(message, case.spec), message
    assert names_next_step(message), message
    assert names_page(message, case.page), message


@pytest.mark.parametrize("case", matrix_params(EXTRACT_CASES))
def test_extract_complete_or_names_fault(case, tenant, tmp_path):
    data_dir = tmp_path / "data"
    tenant.seed_users(USER_COUNT)
    real_ids = user_ids(tenant)
    case.inject(tenant)

    result = run_extract(tenant, data_dir, case.spec.timeout)
    wait_for_fault_page_requests(tenant, case)
    requests = listing_requests(tenant)

    accepted = result.outcome == COMPLETE
    OBSERVATIONS.append(
        {
            "layer": "client",
            "fault": case.label,
            "page": case.page,
            "persistence": case.persistence,
            "outcome": result.outcome,
            "runs": 1,
            "requests": len(requests),
            "users_lost": len(set(real_ids) - set(result.ids)) if accepted else 0,
            "extra_or_duplicate_ids": len(result.ids) - len(set(result.ids) & set(real_ids))
            if accepted
            else 0,
            "message": result.message,
            "message_names_fault": names_fault(result.message, case.spec),
            "message_names_page": names_page(result.message, case.page),
            "message_names_next_step": names_next_step(result.message),
        }
    )

    assert result.outcome == case.expected, result.message
    if result.outcome == COMPLETE:
        assert sorted(result.ids) == sorted(real_ids)
        assert len(set(result.ids)) == len(result.ids)
        assert len(snapshot_files(data_dir)) == 1
    elif result.outcome == CHECK_FAILED:
        assert f"the tenant reports {USER_COUNT}" in result.message
        assert len(result.ids) == case.page * PAGE_SIZE
        assert set(result.ids) < set(real_ids)
        assert len(snapshot_files(data_dir)) == 1
    else:
        assert snapshot_files(data_dir) == []
    assert temporary_files(data_dir) == []
    assert_requests_bounded(requests, case)
    if result.outcome == FAILED:
        assert_failure_message(result.message, case)


@pytest.mark.parametrize(
    "times, expected",
    [(MAX_ATTEMPTS - 1, COMPLETE), (MAX_ATTEMPTS, FAILED)],
    ids=["one-attempt-left", "no-attempt-left"],
)
def test_server_error_retry_budget_edge(times, expected, tenant, tmp_path):
    """A 503 that leaves one attempt completes, and a 503 on every attempt fails the extract."""
    tenant.seed_users(USER_COUNT)
    tenant.inject_fault("503", page=2, times=times)

    result = run_extract(tenant, tmp_path / "data", DEFAULT_TIMEOUT_SECONDS)

    assert result.outcome == expected, result.message
    assert requests_per_page(listing_requests(tenant))[2] == MAX_ATTEMPTS
    if expected == FAILED:
        assert f"failed after {MAX_ATTEMPTS} attempts" in result.message


def test_endless_empty_pages_stay_bounded(tenant, tmp_path):
    tenant.seed_users(USER_COUNT)
    # page=None fires on whatever page comes next, so every page is empty until times runs out.
    tenant.inject_fault("empty_page", page=None, times=20)

    result = run_extract(tenant, tmp_path / "data", DEFAULT_TIMEOUT_SECONDS)

    assert len(listing_requests(tenant)) <= PAGE_COUNT + MAX_ATTEMPTS
    assert result.outcome == FAILED


def run_job(instance, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS):
    from pipelines.definitions import defs

    job = defs.resolve_job_def("qlik_user_watch_job")
    run_config = {
        "resources": {
            "qlik": {
                "config": {
                    "max_attempts": MAX_ATTEMPTS,
                    "wait_initial_seconds": 0.01,
                    "timeout_seconds": timeout_seconds,
                }
            }
        }
    }
    return job.execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)


def materialized_metadata(result, asset: str) -> list[dict]:
    return [
        event.materialization.metadata
        for event in result.get_asset_materialization_events()
        if event.asset_key == AssetKey(asset)
    ]


def ids_materialized(result, asset: str) -> list[str]:
    """Return the ids in the Parquet files of this run's materializations of `asset`."""
    ids = []
    for metadata in materialized_metadata(result, asset):
        table = pq.read_table(metadata["path"].value, columns=["id"])
        ids.extend(table["id"].to_pylist())
    return ids


def classify_run(result) -> tuple[str, str]:
    """Return how a job run ended (complete, check_failed or failed) and its message."""
    if result.success:
        return COMPLETE, ""
    failed_listing_checks = [
        evaluation
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.check_name == "complete_listing" and not evaluation.passed
    ]
    if failed_listing_checks and materialized_metadata(result, "qlik_users"):
        return CHECK_FAILED, failed_listing_checks[0].description or ""
    messages = [
        event.event_specific_data.error.message for event in result.get_step_failure_events()
    ]
    return FAILED, "\n".join(messages)


@pytest.mark.parametrize("case", matrix_params(JOB_CASES))
def test_job_reports_each_change_once(case, pipeline_env, tenant, instance, data_dir):
    tenant.seed_users(USER_COUNT - 1)
    invitee = tenant.invite_user("Pending Invitee", "pending@example.com")
    assert run_job(instance).success
    baseline_file = next(data_dir.rglob("baseline.json"))

    added_before = tenant.add_user("Added Before Fault", "before@example.com")
    tenant.activate_user(invitee["id"])
    ids_at_fault = user_ids(tenant)
    snapshots_before = snapshot_files(data_dir)
    baseline_before = baseline_file.read_bytes()
    tenant.reset_requests()
    case.inject(tenant)

    faulty = run_job(instance, case.spec.timeout)
    outcome, message = classify_run(faulty)
    failed_checks = sorted(
        evaluation.check_name
        for evaluation in faulty.get_asset_check_evaluations()
        if not evaluation.passed
    )
    wait_for_fault_page_requests(tenant, case)
    requests = listing_requests(tenant)
    snapshots_after_fault = snapshot_files(data_dir)
    temporary_after_fault = temporary_files(data_dir)
    baseline_after_fault = baseline_file.read_bytes()

    # A persistent fault would hit the healthy runs too, so they start without faults.
    tenant.clear_faults()
    added_after = tenant.add_user("Added After Fault", "after@example.com")
    healthy = run_job(instance)
    settled = run_job(instance)

    runs = (faulty, healthy, settled)
    reported_new = Counter(
        user_id for run in runs for user_id in ids_materialized(run, "new_users")
    )
    reported_activated = Counter(
        user_id for run in runs for user_id in ids_materialized(run, "activated_users")
    )
    expected_new = Counter({added_before["id"]: 1, added_after["id"]: 1})
    expected_activated = Counter({invitee["id"]: 1})
    OBSERVATIONS.append(
        {
            "layer": "job",
            "fault": case.label,
            "page": case.page,
            "persistence": case.persistence,
            "outcome": outcome,
            "failed_checks": failed_checks,
            "runs": 4,
            "requests": len(requests),
            "users_lost": len(expected_new - reported_new)
            + len(expected_activated - reported_activated),
            "spurious_new_users": sum((reported_new - expected_new).values()),
            "spurious_activated_users": sum((reported_activated - expected_activated).values()),
            "message": message,
            "message_names_fault": names_fault(message, case.spec),
            "message_names_page": names_page(message, case.page),
            "message_names_next_step": names_next_step(message),
        }
    )

    assert outcome == case.expected, message
    assert temporary_after_fault == []
    if outcome == COMPLETE:
        assert sorted(ids_materialized(faulty, "qlik_users")) == sorted(ids_at_fault)
    else:
        assert materialized_metadata(faulty, "new_users") == []
        assert materialized_metadata(faulty, "activated_users") == []
        assert baseline_after_fault == baseline_before
    if outcome == CHECK_FAILED:
        assert "complete_listing" in failed_checks
        assert len(snapshots_after_fault) == len(snapshots_before) + 1
        assert f"the tenant reports {len(ids_at_fault)}" in message
    if outcome == FAILED:
        assert snapshots_after_fault == snapshots_before

    assert healthy.success
    assert sorted(ids_materialized(healthy, "qlik_users")) == sorted(user_ids(tenant))
    assert settled.success
    assert reported_new == expected_new
    assert reported_activated == expected_activated
    assert ids_materialized(settled, "new_users") == []
    assert_requests_bounded(requests, case)
    if outcome == FAILED:
        assert_failure_message(message, case)
