"""Measurements that each run in a fresh process: `python -m benchmarks.workers KIND JSON`.

Each worker imports only what its contender needs, times its own work with perf_counter (so
interpreter start and imports are left out), and prints one JSON line as its last output. The
result carries the worker's peak RSS (VmHWM) after its imports and at its end. The API key comes
from the BENCH_QLIK_API_KEY environment variable, never from the command line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.peak_rss import block_pandas, peak_rss_mb

API_KEY_VARIABLE = "BENCH_QLIK_API_KEY"


def extract_floor(arguments: dict) -> dict:
    """Follow next links with a bare httpx client, parsing each body and nothing else."""
    import httpx

    imported_mb = peak_rss_mb()
    headers = {"Authorization": f"Bearer {os.environ[API_KEY_VARIABLE]}"}
    url = arguments["first_page_url"]
    pages = rows = 0
    started = time.perf_counter()
    with httpx.Client(headers=headers, timeout=30.0) as http:
        while url:
            response = http.get(url)
            response.raise_for_status()
            body = json.loads(response.content)
            pages += 1
            rows += len(body["data"])
            url = ((body.get("links") or {}).get("next") or {}).get("href")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "pages": pages, "rows": rows, "rss_after_import_mb": imported_mb}


def extract_dlt(arguments: dict) -> dict:
    """Collect every user in memory with dlt's RESTClient and JSONLinkPaginator."""
    from dlt.sources.helpers.rest_client import RESTClient
    from dlt.sources.helpers.rest_client.auth import BearerTokenAuth
    from dlt.sources.helpers.rest_client.paginators import JSONLinkPaginator

    imported_mb = peak_rss_mb()
    client = RESTClient(
        base_url=arguments["tenant_url"],
        headers={"Accept": "application/json"},
        auth=BearerTokenAuth(os.environ[API_KEY_VARIABLE]),
        paginator=JSONLinkPaginator(next_url_path="links.next.href"),
        data_selector="data",
    )
    users: list[dict] = []
    pages = 0
    started = time.perf_counter()
    for page in client.paginate(arguments["first_page_path"]):
        users.extend(page)
        pages += 1
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "pages": pages,
        "rows": len(users),
        "rss_after_import_mb": imported_mb,
    }


def extract_ours(arguments: dict) -> dict:
    """Write a snapshot with QlikClient and SnapshotWriter, as the qlik_users asset does.

    The loop mirrors `pipelines.assets._extract_snapshot` without the Dagster context, and the
    client arguments mirror `QlikResource.get_client` (the parent checks them against the
    resource's defaults). With `block_pandas`, importing pandas fails as if it were not
    installed, which shows what pyarrow's import of pandas on the first `pa.array` costs. With
    `write_in_thread`, each page is converted and written by a second thread while the next
    page is requested, at most one page behind.
    """
    if arguments.get("block_pandas"):
        block_pandas()
    from pipelines.qlik import QlikClient, parse_tenant_url, tenant_key
    from pipelines.snapshots import SnapshotWriter, TenantStore

    imported_mb = peak_rss_mb()
    options = arguments["client_options"]
    store = TenantStore(Path(arguments["data_dir"]), tenant_key(parse_tenant_url(options["url"])))
    store.ensure()

    started = time.perf_counter()
    writer = SnapshotWriter(store.new_snapshot_path())
    statuses: Counter[str] = Counter()
    pages = retries = 0
    total_results = None
    try:
        with QlikClient(
            options["url"],
            os.environ[API_KEY_VARIABLE],
            page_size=options["page_size"],
            timeout=options["timeout"],
            max_attempts=options["max_attempts"],
            retry_timeout=options["retry_timeout"],
            wait_initial=options["wait_initial"],
            wait_max=options["wait_max"],
            requests_per_minute=options["requests_per_minute"],
            burst=options["burst"],
        ) as client:
            with ThreadPoolExecutor(max_workers=1) as background:
                pending = None
                for page in client.iter_pages():
                    if arguments.get("write_in_thread"):
                        if pending is not None:
                            pending.result()
                        pending = background.submit(writer.write_page, page.users, page.number)
                    else:
                        writer.write_page(page.users, page.number)
                    pages += 1
                    retries += page.attempts - 1
                    total_results = page.total_results
                    statuses.update(
                        str(user.get("status") or "unknown").lower() for user in page.users
                    )
                if pending is not None:
                    pending.result()
        path = writer.commit()
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - started

    return {
        "seconds": seconds,
        "pages": pages,
        "rows": writer.row_count,
        "retries": retries,
        "total_results": total_results,
        "snapshot": str(path),
        "snapshot_bytes": path.stat().st_size,
        "rss_after_import_mb": imported_mb,
        "pandas_imported": "pandas" in sys.modules,
    }


def compare_ours(arguments: dict) -> dict:
    """Time read_snapshot of both files, find_new_users and find_activated_users."""
    from pipelines.diff import find_activated_users, find_new_users
    from pipelines.snapshots import read_snapshot

    imported_mb = peak_rss_mb()
    started = time.perf_counter()
    current = read_snapshot(Path(arguments["current"]))
    baseline = read_snapshot(Path(arguments["baseline"]))
    read_done = time.perf_counter()
    new_users = find_new_users(current, baseline)
    activated_users = find_activated_users(current, baseline)
    finished = time.perf_counter()

    _write_ids(arguments["ids_prefix"], new_users["id"], activated_users["id"])
    return {
        "seconds": finished - started,
        "read_seconds": read_done - started,
        "new": new_users.num_rows,
        "activated": activated_users.num_rows,
        "rss_after_import_mb": imported_mb,
    }


def compare_proposed(arguments: dict) -> dict:
    """Compare as ours would with two changes: read only id and status of the baseline, and
    find ids with Acero hash joins instead of `pc.is_in` against every baseline id."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipelines.snapshots import read_snapshot

    imported_mb = peak_rss_mb()
    started = time.perf_counter()
    current = read_snapshot(Path(arguments["current"]))
    baseline = pq.read_table(arguments["baseline"], columns=["id", "status"])
    read_done = time.perf_counter()

    current_ids = current.select(["id"])
    new_ids = current_ids.join(baseline.select(["id"]), keys="id", join_type="left anti")
    new_users = current.filter(pc.is_in(current["id"], value_set=new_ids["id"]))

    invited = baseline.filter(pc.equal(baseline["status"], "invited")).select(["id"])
    active_ids = current.filter(pc.equal(current["status"], "active")).select(["id"])
    activated_ids = active_ids.join(invited, keys="id", join_type="left semi")
    activated_users = current.filter(pc.is_in(current["id"], value_set=activated_ids["id"]))
    finished = time.perf_counter()

    _write_ids(arguments["ids_prefix"], new_users["id"], activated_users["id"])
    return {
        "seconds": finished - started,
        "read_seconds": read_done - started,
        "new": new_users.num_rows,
        "activated": activated_users.num_rows,
        "rss_after_import_mb": imported_mb,
    }


# Same result as pipelines.diff: full rows of new users (id not in the baseline) and of users
# invited in the baseline and active now.
NEW_USERS_SQL = """
SELECT current.* FROM read_parquet($current) AS current
ANTI JOIN read_parquet($baseline) AS baseline ON current.id = baseline.id
"""
ACTIVATED_USERS_SQL = """
SELECT current.* FROM read_parquet($current) AS current
SEMI JOIN (SELECT id FROM read_parquet($baseline) WHERE status = 'invited') AS invited
    ON current.id = invited.id
WHERE current.status = 'active'
"""


def compare_duckdb(arguments: dict) -> dict:
    """Run the same comparison as SQL in DuckDB, returning Arrow tables of full rows."""
    import duckdb

    imported_mb = peak_rss_mb()
    parameters = {"current": arguments["current"], "baseline": arguments["baseline"]}
    started = time.perf_counter()
    connection = duckdb.connect()
    new_users = connection.sql(NEW_USERS_SQL, params=parameters).to_arrow_table()
    activated_users = connection.sql(ACTIVATED_USERS_SQL, params=parameters).to_arrow_table()
    finished = time.perf_counter()
    threads = connection.sql("SELECT current_setting('threads')").fetchall()[0][0]
    connection.close()

    _write_ids(arguments["ids_prefix"], new_users["id"], activated_users["id"])
    return {
        "seconds": finished - started,
        "new": new_users.num_rows,
        "activated": activated_users.num_rows,
        "rss_after_import_mb": imported_mb,
        "threads": threads,
    }


def read_snapshot_times(arguments: dict) -> dict:
    """Time read_snapshot on one file `repeat` times."""
    from pipelines.snapshots import read_snapshot

    times = []
    rows = 0
    for _ in range(arguments["repeat"]):
        started = time.perf_counter()
        rows = read_snapshot(Path(arguments["path"])).num_rows
        times.append(time.perf_counter() - started)
    return {"times": times, "rows": rows}


def _write_ids(prefix: str, new_ids, activated_ids) -> None:
    Path(f"{prefix}.new.txt").write_text("\n".join(sorted(new_ids.to_pylist())))
    Path(f"{prefix}.activated.txt").write_text("\n".join(sorted(activated_ids.to_pylist())))


WORKERS = {
    "extract-floor": extract_floor,
    "extract-dlt": extract_dlt,
    "extract-ours": extract_ours,
    "compare-ours": compare_ours,
    "compare-proposed": compare_proposed,
    "compare-duckdb": compare_duckdb,
    "read-snapshot": read_snapshot_times,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in WORKERS:
        print(
            f"usage: python -m benchmarks.workers {{{','.join(WORKERS)}}} JSON_ARGUMENTS",
            file=sys.stderr,
        )
        return 2
    result = WORKERS[argv[0]](json.loads(argv[1]))
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
