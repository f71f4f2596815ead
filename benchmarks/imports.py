"""Parse `python -X importtime` output into the packages that cost the most import time."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


@dataclass(frozen=True)
class PackageCost:
    """Import time of one top-level package, summed over its modules' own (self) times."""

    package: str
    self_ms: float
    modules: int
    imported_by: str


def parse_importtime(stderr: str) -> list[tuple[int, int, str]]:
    """Return (self µs, depth, module) per line, in the order Python printed them."""
    rows = []
    for line in stderr.splitlines():
        match = LINE.match(line)
        if match:
            depth = len(match.group(3)) // 2
            rows.append((int(match.group(1)), depth, match.group(4)))
    return rows


def package_costs(stderr: str, root: str) -> list[PackageCost]:
    """Sum self time per top-level package, heaviest first, with the module that imported it.

    `imported_by` is the nearest module of the `root` package above the package's first module
    in the import tree, or the top-level import when no `root` module is above it. Python prints
    a module after everything it imports, one level deeper, so the importer of a line is the
    next line printed at a smaller depth.
    """
    rows = parse_importtime(stderr)
    totals: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    first_importer: dict[str, str] = {}

    for position, (self_us, depth, module) in enumerate(rows):
        package = module.split(".")[0]
        totals[package] += self_us
        counts[package] += 1
        if package not in first_importer:
            first_importer[package] = _root_ancestor(rows, position, depth, package, root)

    costs = [
        PackageCost(package, totals[package] / 1000, counts[package], first_importer[package])
        for package in totals
    ]
    return sorted(costs, key=lambda cost: cost.self_ms, reverse=True)


def _root_ancestor(rows, position: int, depth: int, package: str, root: str) -> str:
    """Describe who imported rows[position]: "root module via direct importer".

    The direct importer is the nearest ancestor outside `package`; the root module is the
    nearest ancestor in `root`.
    """
    direct = None
    parent_depth = depth
    for _, ancestor_depth, module in rows[position + 1 :]:
        if ancestor_depth >= parent_depth:
            continue
        parent_depth = ancestor_depth
        ancestor_package = module.split(".")[0]
        if direct is None and ancestor_package != package:
            direct = module
        if ancestor_package == root:
            return module if direct in (None, module) else f"{module} via {direct}"
        if ancestor_depth == 0:
            break
    return direct or "(top level)"
