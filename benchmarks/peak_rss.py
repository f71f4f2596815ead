"""Run a module as `python -m` would and write this process's peak RSS in MB when it exits.

Usage: python -m benchmarks.peak_rss OUTPUT_FILE MODULE [ARGUMENTS...]

The figure is VmHWM from /proc/self/status: the peak resident set size of this process since
it started the Python interpreter, without its child processes. Linux only. With the environment
variable BENCH_BLOCK_PANDAS=1, `import pandas` fails as if pandas were not installed.
"""

import atexit
import os
import runpy
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """Return VmHWM of this process in MB (the kernel reports kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line; peak RSS needs Linux")


class PandasBlocker:
    """Import hook that makes `import pandas` raise ModuleNotFoundError."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is blocked by the benchmark", name=name)
        return None


def block_pandas() -> None:
    """Make later imports of pandas fail in this process."""
    sys.meta_path.insert(0, PandasBlocker())


def main() -> None:
    if len(sys.argv) < 3:
        print(__doc__.splitlines()[2], file=sys.stderr)
        sys.exit(2)
    output, module = Path(sys.argv[1]), sys.argv[2]
    if os.environ.get("BENCH_BLOCK_PANDAS") == "1":
        block_pandas()
    atexit.register(lambda: output.write_text(f"{peak_rss_mb():.1f}"))
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
