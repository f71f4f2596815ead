"""Render the benchmark results as docs/benchmarks.md."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

PACKAGES = ("dagster", "httpx", "pyarrow", "stamina", "dlt", "requests", "duckdb", "numpy")

# Targets, as ratios or absolute limits.
EXTRACTION_RATIO_TARGET = 1.10
MEMORY_TARGET_MB = 400
MEMORY_TARGET_USERS = 200_000
COMPARISON_SECONDS_TARGET = 1.0
COMPARISON_MEMORY_TARGET_MB = 1200
COMPARISON_RATIO_TARGET = 1.5
PACING_SHARE_TARGET = 0.90
DAGSTER_RATIO_TARGET = 1.3

# Whether a `dagster asset materialize` run of qlik_users* needs a package that importing
# pipelines.definitions loads, judged from where each package is used in pipelines/.
RUN_NEEDS = {
    "dagster": "yes: runs the job",
    "dagster_shared": "yes: part of dagster",
    "pydantic": "yes: dagster's config and resources",
    "pydantic_core": "yes: dagster's config and resources",
    "pyarrow": "yes: snapshots and comparison",
    "httpx": "yes: the users API client",
    "stamina": "yes: retries",
    "pipelines": "yes",
    "numpy": "no: pyarrow.lib imports NumPy whenever it is installed; no step uses it",
    "apprise": "no: only the alert sensor delivers alerts, but pipelines.alerts imports "
    "apprise at module level and assets.py and resources.py import pipelines.alerts",
    "rich": "no: httpx/__init__ imports its command-line client httpx._main, which imports rich",
    "pygments": "no: comes with rich",
}


NOT_JUDGED = "not judged: pulled in by dagster or the standard library"


def machine_info() -> dict:
    """Return the CPU model, cores, memory, Python, OS and versions of the measured packages."""
    cpu_model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 1024 / 1024
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "packages": versions,
        "load_average": os.getloadavg(),
    }


def _seconds(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if value < 10:
        return f"{value:.2f} s"
    return f"{value:.1f} s"


def _spread(median_seconds: float, all_seconds: list[float]) -> str:
    """Format a median with the range of the runs, e.g. "5.41 s (5.30-5.62)"."""
    if len(all_seconds) < 2:
        return _seconds(median_seconds)
    low, high = min(all_seconds), max(all_seconds)
    return f"{_seconds(median_seconds)} ({low:.2f}-{high:.2f})"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MB"


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x" if floor else "n/a"


def _verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def render(results: dict) -> str:
    """Return the Markdown page for `results`, as assembled by benchmarks.__main__."""
    lines = ["# Benchmarks", ""]
    lines += _introduction(results)
    lines += _machine_section(results["machine"], results)
    lines += _results_table(results)
    lines += _targets_section(results)
    lines += _imports_section(results)
    lines += _method_section(results)
    return "\n".join(lines) + "\n"


def _introduction(results: dict) -> list[str]:
    lines = [
        "Measured by `make bench` (which runs `.venv/bin/python -m benchmarks`), against the "
        "simulated tenant on 127.0.0.1. This page is generated; rerun the command to refresh it.",
        "",
        f"- Run started {results['started']} and took {results['duration_seconds'] / 60:.1f} "
        "minutes end to end (without the package install).",
    ]
    if results.get("quick"):
        lines.append(
            "- **Quick mode** (`--quick`): sizes and runs are cut down, so the figures only show "
            "that the harness works. Targets are stated for the full sizes."
        )
    lines.append("")
    return lines


def _machine_section(machine: dict, results: dict) -> list[str]:
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    start_load = " / ".join(f"{value:.1f}" for value in machine["load_average"])
    end_load = " / ".join(f"{value:.1f}" for value in results["load_average_end"])
    memory = f"{machine['memory_gb']:.0f} GiB" if machine["memory_gb"] else "unknown"
    return [
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['cores']} cores; memory {memory}",
        f"- Python {machine['python']} on {machine['os']}",
        f"- Packages: {packages}",
        f"- Load average (1/5/15 min) at the start: {start_load}; at the end: {end_load}. A load "
        "above the core count means other processes shared the CPU and the times are inflated.",
        "",
    ]


def _results_table(results: dict) -> list[str]:
    lines = [
        "## Results",
        "",
        "Times are medians over the runs shown, with the fastest and slowest run in brackets; "
        "each run is a fresh process, and peak RSS is that process's VmHWM (median over runs). "
        "The ratio is to the row marked *floor* in the same workload.",
        "",
        "| workload | contender | runs | median | ratio to floor | requests | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    extraction = results["extraction"]
    contenders = extraction["contenders"]
    floor = contenders["floor"].median_of("seconds")
    workload = (
        f"extract {extraction['users']:,} users, latency {extraction['latency'] * 1000:.0f} ms"
    )
    dlt_version = results["machine"]["packages"].get("dlt", "")
    labels = {
        "floor": "floor: bare httpx loop following next links",
        "dlt": f"dlt {dlt_version} RESTClient + JSONLinkPaginator, rows kept in memory",
        "ours": "ours: QlikClient + SnapshotWriter (Parquet on disk)",
        "ours-no-pandas": "ours, with pandas made unimportable (what-if)",
        "ours-proposed": "ours, pandas unimportable and each page written by a second thread "
        "while the next is requested (what-if)",
    }
    for name, runs in contenders.items():
        seconds = runs.median_of("seconds")
        requests = runs.runs[0]["requests"]
        non_200 = sum(run["non_200"] for run in runs.runs)
        lines.append(
            f"| {workload} | {labels[name]} | {len(runs.runs)} | "
            f"{_spread(seconds, [run['seconds'] for run in runs.runs])} | "
            f"{_ratio(seconds, floor)} | {requests} a run, {non_200} not 200 | "
            f"{_mb(runs.median_of('peak_rss_mb'))} |"
        )

    for row in results["memory"]:
        workload = f"extract {row['users']:,} users, latency 0, pacing off"
        lines.append(
            f"| {workload} | ours | 1 | {_seconds(row['seconds'])} | | {row['requests']:,} | "
            f"{_mb(row['peak_rss_mb'])} |"
        )
        if "no_pandas_seconds" in row:
            lines.append(
                f"| {workload} | ours, with pandas made unimportable (what-if) | 1 | "
                f"{_seconds(row['no_pandas_seconds'])} | | {row['requests']:,} | "
                f"{_mb(row['no_pandas_peak_rss_mb'])} |"
            )

    comparison = results["comparison"]
    for layout, title in (
        ("pages", "100-row groups, one per page as an older SnapshotWriter wrote"),
        ("large", "65,536-row groups, as SnapshotWriter writes"),
    ):
        summary = comparison[layout]
        duckdb_seconds = summary["duckdb"]["seconds"]
        workload = f"compare 2 x {comparison['users']:,} users, {title}"
        lines.append(
            f"| {workload} | floor: DuckDB {summary['duckdb']['threads']} threads, SQL anti and "
            f"semi join | {summary['duckdb']['runs']} | "
            f"{_spread(duckdb_seconds, summary['duckdb']['all_seconds'])} | 1.00x | | "
            f"{_mb(summary['duckdb']['peak_rss_mb'])} |"
        )
        comparison_labels = {
            "ours": "ours: read_snapshot x2 + find_new_users + find_activated_users",
            "proposed": "ours with the baseline read as id and status only and Acero hash "
            "joins on id (what-if)",
        }
        for name, label in comparison_labels.items():
            if name not in summary:
                continue
            measured = summary[name]
            lines.append(
                f"| {workload} | {label} (read: {_seconds(measured['read_seconds'])}) | "
                f"{measured['runs']} | {_spread(measured['seconds'], measured['all_seconds'])} | "
                f"{_ratio(measured['seconds'], duckdb_seconds)} | | "
                f"{_mb(measured['peak_rss_mb'])} |"
            )

    pacing = results["pacing"]
    lines.append(
        f"| {pacing['pages']} pages under a {pacing['simulator_per_minute']}/min, burst "
        f"{pacing['simulator_burst']} limit, latency {pacing['latency'] * 1000:.0f} ms | ours at "
        f"{pacing['client_per_minute']}/min, burst {pacing['client_burst']} | 1 | "
        f"{_seconds(pacing['seconds'])} | | {pacing['requests']}, "
        f"{pacing['rate_limited']} answered 429 | {_mb(pacing['peak_rss_mb'])} |"
    )

    dagster = results["dagster"]
    trivial = dagster["projects"]["trivial"]
    workload = "`dagster asset materialize`, in_process_executor"
    dagster_labels = {
        "trivial": "floor: one asset returning 1 (benchmarks/trivial_project)",
        "ours": f"ours: `qlik_users*` over {dagster['users']:,} users",
        "ours-no-pandas": "ours, with pandas made unimportable (what-if)",
    }
    for project, label in dagster_labels.items():
        measured = dagster["projects"][project]
        requests = f"{measured['requests']} a run" if measured["requests"] else "0"
        lines.append(
            f"| {workload} | {label} | {dagster['runs']} | "
            f"{_spread(measured['seconds'], measured['all_seconds'])} | "
            f"{_ratio(measured['seconds'], trivial['seconds'])} | {requests} | "
            f"{_mb(measured['peak_rss_mb'])} |"
        )

    for row in results["storage"]:
        groups = "row group" if row["row_groups"] == 1 else "row groups"
        lines.append(
            f"| read_snapshot of {row['users']:,} users ({row['layout']}, "
            f"{row['row_groups']:,} {groups}, {row['bytes'] / 1e6:.1f} MB, "
            f"{row['mb_per_100k']:.2f} MB per 100,000 users) | ours | "
            f"{results['storage_repeat']} reads | {_seconds(row['read_seconds'])} | | | |"
        )
    lines.append("")
    return lines


def _targets_section(results: dict) -> list[str]:
    lines = ["## Targets", ""]
    extraction = results["extraction"]
    contenders = extraction["contenders"]
    floor = contenders["floor"].median_of("seconds")
    dlt = contenders["dlt"].median_of("seconds")
    ours = contenders["ours"].median_of("seconds")
    ratio = ours / floor
    pages = -(-extraction["users"] // 100)
    requests = {run["requests"] for run in contenders["ours"].runs}
    retries = sum(run["retries"] for run in contenders["ours"].runs)
    latency_floor = pages * extraction["latency"]
    lines.append(
        f"- Extraction within {EXTRACTION_RATIO_TARGET:.2f}x of the floor: "
        f"{_verdict(ratio <= EXTRACTION_RATIO_TARGET)}, {ratio:.3f}x ({_seconds(ours)} against "
        f"{_seconds(floor)}; {pages} pages at {extraction['latency'] * 1000:.0f} ms latency "
        f"alone take {latency_floor:.1f} s)."
    )
    lines.append(
        f"- Extraction at least as fast as dlt: {_verdict(ours <= dlt)}, "
        f"{ours / dlt:.3f}x dlt's time ({_seconds(dlt)})."
    )
    if "ours-no-pandas" in contenders and "ours-proposed" in contenders:
        no_pandas = contenders["ours-no-pandas"].median_of("seconds")
        proposed = contenders["ours-proposed"].median_of("seconds")
        per_page_ms = (no_pandas - floor) / pages * 1000
        lines.append(
            "  Why: two costs that the floor and dlt do not have. On its first page, "
            "SnapshotWriter's `pa.array(list)` makes pyarrow import pandas, which no module of "
            f"pipelines/ uses; with pandas made unimportable ours takes {_seconds(no_pandas)} "
            f"({no_pandas / floor:.3f}x the floor). Then, after each response, ours parses and "
            "checks the body and the ids before it sends the next request. The Arrow conversion "
            f"runs on SnapshotWriter's thread meanwhile, about {per_page_ms:.1f} ms a page here "
            "in all, and both threads share one interpreter lock. The what-if that also "
            f"writes in a second thread, without pandas, takes {_seconds(proposed)}: "
            f"{proposed / floor:.3f}x the floor and {proposed / dlt:.3f}x dlt."
        )
    lines.append(
        f"- Exactly {pages} requests and no retries: "
        f"{_verdict(requests == {pages} and retries == 0)}, requests per run {sorted(requests)}, "
        f"{retries} retries over {len(contenders['ours'].runs)} runs."
    )

    memory = {row["users"]: row for row in results["memory"]}
    target_row = memory.get(MEMORY_TARGET_USERS)
    if target_row:
        peak = target_row["peak_rss_mb"]
        largest = memory[max(memory)]
        smallest = memory[min(memory)]
        lines.append(
            f"- Peak RSS under {MEMORY_TARGET_MB} MB at {MEMORY_TARGET_USERS:,} users: "
            f"{_verdict(peak < MEMORY_TARGET_MB)}, {_mb(peak)} ({_mb(smallest['peak_rss_mb'])} "
            f"at {smallest['users']:,}, {_mb(largest['peak_rss_mb'])} at "
            f"{largest['users']:,}). What grows with the tenant: SnapshotWriter's dict of every "
            "id (to detect duplicates) and the buffered row group of up to 65,536 users. pandas, "
            "imported by pyarrow "
            f"but unused, adds {peak - target_row['no_pandas_peak_rss_mb']:.0f} MB."
        )
    else:
        lines.append(f"- Peak RSS at {MEMORY_TARGET_USERS:,} users: not measured in this mode.")

    comparison = results["comparison"]
    for layout, title in (
        ("pages", "100-row groups (an older writer's layout)"),
        ("large", "65,536-row groups, as SnapshotWriter writes"),
    ):
        ours_summary = comparison[layout]["ours"]
        duckdb_seconds = comparison[layout]["duckdb"]["seconds"]
        seconds = ours_summary["seconds"]
        peak = ours_summary["peak_rss_mb"]
        within = seconds / duckdb_seconds
        met = (
            seconds <= COMPARISON_SECONDS_TARGET * 1.1
            and peak < COMPARISON_MEMORY_TARGET_MB
            and within <= COMPARISON_RATIO_TARGET
        )
        lines.append(
            f"- Comparison of {comparison['users']:,} users, {title}, about "
            f"{COMPARISON_SECONDS_TARGET:.0f} s, under {COMPARISON_MEMORY_TARGET_MB:,} MB and "
            f"within {COMPARISON_RATIO_TARGET}x of DuckDB: {_verdict(met)}: {_seconds(seconds)} "
            f"(reading the two files: {_seconds(ours_summary['read_seconds'])}), {_mb(peak)}, "
            f"{within:.2f}x DuckDB. Both found the same "
            f"{ours_summary['new']:,} new and {ours_summary['activated']:,} activated ids."
        )
    pages_read = comparison["pages"]["ours"]["read_seconds"]
    large = comparison["large"]
    large_read = large["ours"]["read_seconds"]
    large_compute = large["ours"]["seconds"] - large_read
    lines.append(
        f"  Why: with one row group per 100-user page, a {comparison['users']:,}-user snapshot "
        f"has {comparison['users'] // 100:,} row groups of 9 column chunks each, and reading the "
        f"two files takes {_seconds(pages_read)}; SnapshotWriter therefore writes 65,536-row "
        f"groups, read in {_seconds(large_read)}. Finding the ids takes another "
        f"{_seconds(large_compute)}. DuckDB decodes the Parquet files and joins on both cores "
        "in one engine, while ours reads the current snapshot whole, since new_users keeps "
        "every column, and joins in a second pass."
    )
    if "proposed" in large:
        proposed = large["proposed"]
        lines.append(
            f"  Reading only id and status of the baseline and using Acero's multithreaded hash "
            f"joins (what-if row) takes {_seconds(proposed['seconds'])}, "
            f"{proposed['seconds'] / large['duckdb']['seconds']:.2f}x DuckDB, with a peak of "
            f"{_mb(proposed['peak_rss_mb'])}, and finds the same ids."
        )

    pacing = results["pacing"]
    lines.append(
        f"- Pacing, 0 answers 429 and at least {PACING_SHARE_TARGET:.0%} of the allowed rate: "
        f"{_verdict(pacing['rate_limited'] == 0 and pacing['steady_share'] >= PACING_SHARE_TARGET)}"
        f": {pacing['rate_limited']} answered 429; after the burst, requests arrived at "
        f"{pacing['steady_rate_per_minute']:.0f} a minute, {pacing['steady_share']:.1%} of the "
        f"{pacing['simulator_per_minute']} allowed (the client is set to "
        f"{pacing['client_per_minute'] / pacing['simulator_per_minute']:.0%}). Over the whole "
        f"run it sent {pacing['overall_share']:.1%} of what the simulator would have accepted, "
        f"its burst of {pacing['simulator_burst']} included."
    )

    dagster = results["dagster"]["projects"]
    dagster_ratio = dagster["ours"]["seconds"] / dagster["trivial"]["seconds"]
    no_pandas_ratio = dagster["ours-no-pandas"]["seconds"] / dagster["trivial"]["seconds"]
    saved_mb = dagster["ours"]["peak_rss_mb"] - dagster["ours-no-pandas"]["peak_rss_mb"]
    saved_seconds = dagster["ours"]["seconds"] - dagster["ours-no-pandas"]["seconds"]
    with_pandas = dagster["ours"]["all_seconds"]
    without_pandas = dagster["ours-no-pandas"]["all_seconds"]
    runs_overlap = max(min(with_pandas), min(without_pandas)) <= min(
        max(with_pandas), max(without_pandas)
    )
    numpy_ms = next(
        (
            cost.self_ms
            for cost in results["imports"]["pipelines.definitions"]["packages"]
            if cost.package == "numpy"
        ),
        0.0,
    )
    imports = results["imports"]
    import_gap = (
        imports["pipelines.definitions"]["process_seconds"]
        - imports["benchmarks.trivial_project.definitions"]["process_seconds"]
    )
    lines.append(
        f"- Dagster run within {DAGSTER_RATIO_TARGET}x of a one-asset project: "
        f"{_verdict(dagster_ratio <= DAGSTER_RATIO_TARGET)}, {dagster_ratio:.2f}x "
        f"({_seconds(dagster['ours']['seconds'])} against "
        f"{_seconds(dagster['trivial']['seconds'])}); with pandas made unimportable "
        f"{no_pandas_ratio:.2f}x."
    )
    lines.append(
        f"  Why: importing pipelines.definitions takes {import_gap:.2f} s longer than importing "
        f"the one-asset project (fastest of {results['import_runs']} `python -c` runs; see "
        "Import time below). The rest is the run itself: three assets and two blocking checks "
        "write more events to the SQLite event log than one asset, plus the extraction and the "
        f"comparison. Blocking pandas saves {saved_mb:.0f} MB and {saved_seconds:.2f} s "
        f"({'within the overlap of' if runs_overlap else 'beyond'} the two sets of runs). "
        f"NumPy ({numpy_ms:.0f} ms of imports) is still installed in that what-if and pyarrow "
        "still imports it; among the project's dependencies only pandas requires NumPy, so "
        "dropping pandas would remove it too."
    )
    lines.append("")
    return lines


def _imports_section(results: dict) -> list[str]:
    imports = results["imports"]
    definitions = imports["pipelines.definitions"]
    lines = [
        "## Import time",
        "",
        f'`python -X importtime -c "import X"`, fastest of {results["import_runs"]} runs, '
        "summed self time of every module:",
        "",
    ]
    for target, measured in imports.items():
        lines.append(
            f"- `{target}`: {measured['self_ms']:.0f} ms of imports, "
            f"{measured['process_seconds']:.2f} s for the whole `python -c` process"
        )
    lines += [
        "",
        "Heaviest packages loaded by `import pipelines.definitions` (self time summed per "
        "top-level package):",
        "",
        "| package | self time | modules | first imported by | needed by a run? |",
        "|---|---|---|---|---|",
    ]
    for cost in definitions["packages"][:15]:
        need = RUN_NEEDS.get(cost.package, NOT_JUDGED)
        lines.append(
            f"| {cost.package} | {cost.self_ms:.0f} ms | {cost.modules} | {cost.imported_by} | "
            f"{need} |"
        )
    lines.append("")
    return lines


def _method_section(results: dict) -> list[str]:
    extraction = results["extraction"]
    memory = results["memory"]
    seeding = "; ".join(
        f"to {row['users']:,} users: {_seconds(row['seed_seconds'])} seeding, "
        f"{_seconds(row['freeze_seconds'])} indexing"
        for row in memory
    )
    page_seconds = extraction["simulator_page_seconds"]
    pages = -(-extraction["users"] // 100)
    return [
        "## Method and limits",
        "",
        "- **Tenant.** The simulator's own listing deep-copies and sorts every user on each "
        f"request: one page of the {extraction['users']:,}-user tenant took "
        f"{_seconds(page_seconds)} to serve (mean of the first pages, latency 0). At that "
        f"cost, {pages} pages would add about {pages * page_seconds:.0f} s to every contender. "
        "Every run here therefore uses benchmarks/tenant.py: the simulator's server, "
        "authentication, latency, rate limit and request log, with listing pages cut from "
        "users sorted once. Before measuring, its first pages are compared byte for byte with "
        "the simulator's.",
        f"- **Seeding** (`SimulatedTenant.seed_users_bulk`, cumulative): {seeding}.",
        "- **Extraction.** Runs are interleaved (floor, dlt, ours, ..., floor, ...). Each worker "
        "times its own loop with perf_counter, so interpreter start and imports are left out; "
        "requests are counted from the simulator's request log. Ours repeats the loop of "
        "`pipelines.assets._extract_snapshot` without the Dagster context, with the client "
        "arguments `QlikResource.get_client` passes by default (checked at start). The first "
        "URL, with `limit=100`, `fields=...` and `totalResults=true`, is the same for all. dlt "
        "keeps the rows in memory; it runs no pipeline and writes nothing. The what-if rows "
        "block `import pandas` with an import hook, as if pandas were not installed.",
        "- **Memory runs** switch pacing off: the default 900 requests a minute would stretch "
        "1,000,000 users (10,000 pages) to about 11 minutes, and the pacer stores no data.",
        "- **Comparison files** are built with the standard library and pyarrow, in the "
        "snapshot schema and zstd, and written in both layouts. Ids are random 24-hex strings "
        "and 10% of users are invited. The current snapshot is the baseline with 1% of users "
        "moved from invited to active, plus 1% new users. Each contender's new and activated "
        "ids are checked against the ids built into the files.",
        "- **Peak RSS** is VmHWM from /proc/self/status at process exit. getrusage's ru_maxrss "
        "is not used, because Linux carries the parent's size into a child's maximum across "
        "fork and exec. The same code and package versions in a fresh clone under /tmp read "
        "about 36 MB more at every size, so compare RSS only within one run of this page.",
        "- **Pacing** uses the simulator's token-bucket rate limit (`rate_limit_per_minute`, "
        "`rate_limit_burst`); arrival times are taken by the server.",
        "",
        "Command: `make bench`, or `.venv/bin/python -m benchmarks [--quick] [--output PATH]`.",
    ]
