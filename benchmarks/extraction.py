"""Extraction from the simulated tenant: ours against a bare httpx loop and dlt, then memory."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.processes import median, run_worker, worker_environment
from benchmarks.tenant import IndexedTenant, verify_pages_match
from pipelines.qlik import QlikClient
from pipelines.qlik.client import USERS_PATH

API_KEY = "bench-key-7c1d0f"
TENANT_SEED = 20261204
# What-if contenders: "ours-no-pandas" is ours with pandas made unimportable (pipelines/ never
# uses pandas, but pyarrow imports it on the first pa.array of a list when it is installed), and
# "ours-proposed" also converts and writes each page in a second thread.
CONTENDERS = ("floor", "dlt", "ours", "ours-no-pandas", "ours-proposed")
# Pages compared byte for byte with the simulator's own listing before measuring.
VERIFIED_PAGES = 3


def resource_client_options(tenant_url: str) -> dict:
    """Return QlikClient arguments as QlikResource.get_client passes them with its defaults.

    Raises:
        AssertionError: the client QlikResource builds differs from these arguments, so the
            mirror in benchmarks.workers.extract_ours must be updated.
    """
    from pipelines.resources import QlikResource

    resource = QlikResource(tenant_url=tenant_url, api_key=API_KEY)
    options = {
        "url": tenant_url,
        "page_size": resource.page_size,
        "timeout": resource.timeout_seconds,
        "max_attempts": resource.max_attempts,
        "retry_timeout": resource.retry_timeout_seconds,
        "wait_initial": resource.wait_initial_seconds,
        "wait_max": max(30.0, resource.wait_initial_seconds),
        "requests_per_minute": resource.requests_per_minute,
        "burst": resource.burst,
    }
    with resource.get_client() as built:
        pacer = built.pacer
        observed = {
            "page_size": built.page_size,
            "max_attempts": built.max_attempts,
            "retry_timeout": built.retry_timeout,
            "wait_initial": built.wait_initial,
            "wait_max": built.wait_max,
            "requests_per_minute": pacer.rate * 60 if pacer else None,
            "burst": int(pacer.burst) if pacer else None,
        }
    for name, value in observed.items():
        if options[name] != value and not math.isclose(options[name] or 0, value or 0):
            raise AssertionError(
                f"QlikResource.get_client sets {name}={value!r}, but the benchmark passes "
                f"{options[name]!r}; update benchmarks/extraction.py and workers.extract_ours"
            )
    return options


def first_page_url(tenant_url: str) -> str:
    with QlikClient(tenant_url, API_KEY, requests_per_minute=None) as client:
        return str(client.first_page_url)


@dataclass
class ContenderRuns:
    """Results of one contender's runs."""

    name: str
    runs: list[dict] = field(default_factory=list)

    def median_of(self, key: str) -> float:
        return median([run[key] for run in self.runs if run.get(key) is not None])


def api_requests(tenant: IndexedTenant) -> list[dict]:
    return [entry for entry in tenant.requests if entry["path"] == USERS_PATH]


def run_contender(
    tenant: IndexedTenant,
    contender: str,
    *,
    data_dir: Path,
    client_options: dict,
    first_url: str,
) -> dict:
    """Run one contender in a fresh process and attach the tenant's request counts."""
    tenant.reset_requests()
    ours = {"data_dir": str(data_dir), "client_options": client_options}
    kind, arguments = {
        "floor": ("extract-floor", {"first_page_url": first_url}),
        "dlt": (
            "extract-dlt",
            {"tenant_url": tenant.url, "first_page_path": first_url[len(tenant.url) :]},
        ),
        "ours": ("extract-ours", ours),
        "ours-no-pandas": ("extract-ours", dict(ours, block_pandas=True)),
        "ours-proposed": ("extract-ours", dict(ours, block_pandas=True, write_in_thread=True)),
    }[contender]
    environment = worker_environment(
        {
            "BENCH_QLIK_API_KEY": API_KEY,
            # dlt looks for configuration and writes state under these folders.
            "DLT_DATA_DIR": str(data_dir / "dlt-data"),
            "DLT_PROJECT_DIR": str(data_dir / "dlt-project"),
        }
    )
    result = run_worker(kind, arguments, env=environment)
    entries = api_requests(tenant)
    result["requests"] = len(entries)
    result["non_200"] = sum(1 for entry in entries if entry["status"] != 200)
    result["rate_limited"] = sum(1 for entry in entries if entry.get("rate_limited"))
    return result


def check_complete(result: dict, contender: str, users: int) -> None:
    """Raise AssertionError unless the contender read every user with one request a page."""
    pages = math.ceil(users / 100)
    if result["rows"] != users:
        raise AssertionError(f"{contender} read {result['rows']} users, expected {users}")
    if result["requests"] != pages or result["non_200"]:
        raise AssertionError(
            f"{contender} sent {result['requests']} requests ({result['non_200']} not 200), "
            f"expected {pages} successful ones"
        )


def benchmark_extraction(tenant: IndexedTenant, users: int, latency: float, runs: int) -> dict:
    """Run every contender `runs` times, interleaved, against a tenant of `users` users."""
    first_url = first_page_url(tenant.url)
    client_options = resource_client_options(tenant.url)

    tenant.latency = 0.0
    simulator_page_seconds = verify_pages_match(tenant, first_url, VERIFIED_PAGES)
    tenant.latency = latency

    results = {name: ContenderRuns(name) for name in CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as folder:
        for run in range(runs):
            for name in CONTENDERS:
                result = run_contender(
                    tenant,
                    name,
                    data_dir=Path(folder) / f"{name}-{run}",
                    client_options=client_options,
                    first_url=first_url,
                )
                check_complete(result, name, users)
                if result.get("retries"):
                    raise AssertionError(f"{name} retried {result['retries']} pages")
                results[name].runs.append(result)
    tenant.latency = 0.0
    return {
        "users": users,
        "latency": latency,
        "runs": runs,
        "contenders": results,
        "simulator_page_seconds": simulator_page_seconds,
        "client_options": client_options,
    }


def benchmark_memory(tenant: IndexedTenant, sizes: list[int], keep_dir: Path) -> list[dict]:
    """Grow the tenant to each size, then extract once with ours, and once with pandas
    blocked (except at the largest size), recording peak RSS.

    Pacing is off: the default 900 requests a minute would stretch 1,000,000 users (10,000
    pages) to about 11 minutes, and the pacer stores no data. Snapshots of the runs of ours are
    kept in `keep_dir`.
    """
    first_url = first_page_url(tenant.url)
    client_options = dict(resource_client_options(tenant.url), requests_per_minute=None)
    tenant.latency = 0.0
    rows = []
    for size in sizes:
        if size < tenant.listed_users:
            raise ValueError(f"The tenant has {tenant.listed_users} users, more than {size}")
        seed_seconds = tenant.seed_users_bulk(size - tenant.listed_users)
        freeze_seconds = tenant.freeze()
        result = run_contender(
            tenant,
            "ours",
            data_dir=keep_dir / f"users-{size}",
            client_options=client_options,
            first_url=first_url,
        )
        check_complete(result, "ours", size)
        result.update(users=size, seed_seconds=seed_seconds, freeze_seconds=freeze_seconds)
        rows.append(result)
        if size == max(sizes):
            # Saves about a minute; the smaller sizes show what pandas adds.
            continue
        without_pandas = run_contender(
            tenant,
            "ours-no-pandas",
            data_dir=keep_dir / f"users-{size}-no-pandas",
            client_options=client_options,
            first_url=first_url,
        )
        check_complete(without_pandas, "ours-no-pandas", size)
        Path(without_pandas["snapshot"]).unlink()
        result.update(
            no_pandas_peak_rss_mb=without_pandas["peak_rss_mb"],
            no_pandas_seconds=without_pandas["seconds"],
        )
    return rows


def start_tenant(users: int) -> tuple[IndexedTenant, float]:
    """Start the indexed tenant with `users` seeded users; return it and the seeding seconds."""
    tenant = IndexedTenant(API_KEY, seed=TENANT_SEED).start()
    seconds = tenant.seed_users_bulk(users)
    tenant.freeze()
    return tenant, seconds
