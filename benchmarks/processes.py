"""Run one measurement in a fresh Python process and collect its result and peak memory.

Peak memory is the process's own VmHWM from /proc/self/status, read as it ends. getrusage's
ru_maxrss would be wrong here: Linux carries the parent's resident size into a child's maximum
across fork and exec, so every worker would report at least the size of this harness.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Proxy variables would send loopback requests elsewhere, and dlt's telemetry would reach a
# remote host, so every worker runs with both switched off.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


def worker_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return this process's environment without proxies or QLIK_ and DAGSTER_ settings.

    dlt's telemetry is off, and the repository is on PYTHONPATH.
    """
    environment = {name: value for name, value in os.environ.items() if name not in PROXY_VARIABLES}
    environment["NO_PROXY"] = environment["no_proxy"] = "127.0.0.1,localhost"
    environment["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    environment["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPO), environment.get("PYTHONPATH")) if part
    )
    environment.update(extra or {})
    return environment


def run_command(
    command: list[str], *, env: dict[str, str], cwd: Path = REPO, timeout: float = 900
) -> dict:
    """Run a command; return its wall seconds, stdout and stderr.

    Raises:
        RuntimeError: the command exited with a non-zero status or ran past `timeout` seconds.
    """
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{_describe(command)} timed out after {timeout:.0f} s") from None
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(
            f"{_describe(command)} exited with {completed.returncode}:\n{completed.stderr[-3000:]}"
        )
    return {"wall_seconds": wall, "stdout": completed.stdout, "stderr": completed.stderr}


def run_module_measured(
    module: str,
    arguments: list[str],
    *,
    env: dict[str, str],
    cwd: Path = REPO,
    timeout: float = 900,
) -> dict:
    """Run `python -m module arguments` and return its wall seconds, peak RSS in MB and output.

    The module runs under benchmarks.peak_rss, which records VmHWM when the process exits.
    """
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as folder:
        rss_file = Path(folder) / "peak_rss_mb"
        command = [sys.executable, "-m", "benchmarks.peak_rss", str(rss_file), module, *arguments]
        result = run_command(command, env=env, cwd=cwd, timeout=timeout)
        result["peak_rss_mb"] = float(rss_file.read_text())
    return result


def run_worker(kind: str, arguments: dict, *, env: dict[str, str] | None = None) -> dict:
    """Run `python -m benchmarks.workers KIND JSON` and return its JSON result.

    The worker prints its result, which includes its peak RSS, as one JSON line last on stdout.
    """
    command = [sys.executable, "-m", "benchmarks.workers", kind, json.dumps(arguments)]
    completed = run_command(command, env=env or worker_environment())
    lines = [line for line in completed["stdout"].splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(
            f"Worker {kind} printed no result; stderr:\n{completed['stderr'][-3000:]}"
        )
    result = json.loads(lines[-1])
    result["process_seconds"] = completed["wall_seconds"]
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _describe(command: list[str]) -> str:
    return " ".join(command[:5]) + (" ..." if len(command) > 5 else "")
