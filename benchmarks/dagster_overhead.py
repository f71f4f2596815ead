"""The cost of a `dagster asset materialize` run of ours against a one-asset project."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.extraction import API_KEY, TENANT_SEED
from benchmarks.imports import package_costs
from benchmarks.processes import REPO, median, run_command, run_module_measured, worker_environment
from benchmarks.tenant import IndexedTenant

# Project name: (definitions module, selection, pandas blocked). "ours-no-pandas" is ours with
# pandas made unimportable, as if the unused dependency were dropped.
PROJECTS = {
    "trivial": ("benchmarks.trivial_project.definitions", "trivial_asset*", False),
    "ours": ("pipelines.definitions", "qlik_users*", False),
    "ours-no-pandas": ("pipelines.definitions", "qlik_users*", True),
}
IMPORT_TARGETS = {
    "pipelines.definitions": "import pipelines.definitions",
    "benchmarks.trivial_project.definitions": "import benchmarks.trivial_project.definitions",
    "dagster": "import dagster",
}


def materialize(project: str, home: Path, data_dir: Path, tenant_url: str) -> dict:
    """Run the dagster CLI once in a folder of its own and return wall seconds and peak RSS.

    The working folder is empty, so no `.env` with a real tenant or alert URL is read.
    """
    module, selection, pandas_blocked = PROJECTS[project]
    environment = worker_environment(
        {
            "DAGSTER_HOME": str(home),
            "QLIK_TENANT_URL": tenant_url,
            "QLIK_API_KEY": API_KEY,
            "QLIK_USERS_DATA_DIR": str(data_dir),
            "BENCH_BLOCK_PANDAS": "1" if pandas_blocked else "0",
        }
    )
    arguments = ["asset", "materialize", "-m", module, "--select", selection]
    # The command exits with 1 ("Materialization failed.") when the run fails.
    return run_module_measured("dagster", arguments, env=environment, cwd=home.parent)


def benchmark_dagster(users: int, runs: int) -> dict:
    """Materialize both projects once to warm up, then `runs` times each, interleaved.

    Ours reads `users` users from the indexed simulated tenant (latency 0), so the extraction
    is as short as it can be and the overhead shows. The warm-up run of ours sets the
    baseline, so the timed runs compare against it, as hourly runs do.
    """
    timings: dict[str, list[dict]] = {project: [] for project in PROJECTS}
    with (
        tempfile.TemporaryDirectory(prefix="bench-dagster-") as folder,
        IndexedTenant(API_KEY, seed=TENANT_SEED) as tenant,
    ):
        tenant.seed_users_bulk(users)
        tenant.freeze()
        homes = {}
        for project in PROJECTS:
            home = Path(folder) / project / "dagster_home"
            home.mkdir(parents=True)
            shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
            homes[project] = home
            materialize(project, home, Path(folder) / project / "data", tenant.url)

        for _ in range(runs):
            for project, home in homes.items():
                tenant.reset_requests()
                result = materialize(project, home, Path(folder) / project / "data", tenant.url)
                result["requests"] = len(tenant.requests)
                expected = 0 if project == "trivial" else -(-users // 100)
                if result["requests"] != expected:
                    raise AssertionError(
                        f"The {project} run sent {result['requests']} requests, expected {expected}"
                    )
                timings[project].append(result)

    summary = {}
    for project, results in timings.items():
        summary[project] = {
            "seconds": median([result["wall_seconds"] for result in results]),
            "peak_rss_mb": median([result["peak_rss_mb"] for result in results]),
            "requests": results[0]["requests"],
            "all_seconds": [result["wall_seconds"] for result in results],
        }
    return {"users": users, "runs": runs, "projects": summary}


def measure_imports(repeat: int = 3) -> dict:
    """Time `python -X importtime -c "import X"` for each target; keep the fastest run.

    Returns per target the summed self time in ms and, for pipelines.definitions, the
    per-package breakdown.
    """
    environment = worker_environment()
    results = {}
    for target, statement in IMPORT_TARGETS.items():
        best = None
        for _ in range(repeat):
            completed = run_command(
                [sys.executable, "-X", "importtime", "-c", statement], env=environment
            )
            costs = package_costs(completed["stderr"], root="pipelines")
            total = sum(cost.self_ms for cost in costs)
            if best is None or total < best[0]:
                best = (total, costs, completed["wall_seconds"])
        results[target] = {"self_ms": best[0], "packages": best[1], "process_seconds": best[2]}
    return results
