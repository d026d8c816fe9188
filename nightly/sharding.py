"""Shards across machines: `--shard=I/N` (1-based, as pytest-split's `--group`) runs the
I-th of N parts of the selected tests, balanced by measured time from `--durations-file`
(JSON, node id -> seconds; a test it does not list counts as the median of those it does,
and with no file every test counts the same). `--save-durations` merges this run's
durations into that file (pytest-split's own `--store-durations` is left to it, so the two
can be installed together).

The split is a pure function of the selected node ids and the file: every shard computes
the same assignment, so the shards' union is the whole selection and no test runs twice,
provided every shard reads the same durations file. Longest first, each test to the least
loaded shard (ties: the lower shard), ties between tests broken by node id.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import pytest


def parse_shard(spec: str) -> tuple[int, int]:
    """`"2/4"` -> `(2, 4)`; I from 1 to N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise pytest.UsageError(f"--shard: expected I/N with 1 <= I <= N (1-based), got {spec!r}")
    return int(m[1]), int(m[2])


def load_durations(path: str | None) -> dict[str, float]:
    """The durations file's `{node id: seconds}` ({} if it does not exist yet)."""
    if not path or not Path(path).exists():
        return {}
    try:
        data = json.loads(Path(path).read_text())
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise pytest.UsageError(f"--durations-file: expected a JSON object of node id -> "
                                f"seconds, got {path} ({exc})") from exc


def assign(nodeids: list[str], shards: int, durations: dict[str, float]) -> list[list[str]]:
    """Node ids per shard, balanced greedily by duration (see the module docstring)."""
    known = [durations[n] for n in nodeids if n in durations]
    default = statistics.median(known) if known else 1.0
    cost = {n: durations.get(n, default) for n in nodeids}
    loads = [0.0] * shards
    parts: list[list[str]] = [[] for _ in range(shards)]
    for n in sorted(set(nodeids), key=lambda n: (-cost[n], n)):
        i = min(range(shards), key=lambda i: (loads[i], i))
        parts[i].append(n)
        loads[i] += cost[n]
    return parts


def merge_durations(paths: list[str]) -> dict[str, float]:
    """Several shards' durations files as one (a later file wins for a test in several)."""
    out: dict[str, float] = {}
    for p in paths:
        out.update(load_durations(p))
    return dict(sorted(out.items()))


@pytest.hookimpl(trylast=True)  # after -k/-m: shard what the run selected
def pytest_collection_modifyitems(config, items):
    spec = config.getoption("shard")
    if not spec:
        return
    from sparse_attn_conformance.plugin.selection import identity  # here: the merge command needs no torch

    index, count = parse_shard(spec)
    ids = [identity(item)["nodeid"] for item in items]
    mine = set(assign(ids, count, load_durations(config.getoption("durations_file")))[index - 1])
    keep = [item for item, n in zip(items, ids, strict=True) if n in mine]
    drop = [item for item, n in zip(items, ids, strict=True) if n not in mine]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_report_header(config):
    spec = config.getoption("shard")
    if not spec:
        return []
    index, count = parse_shard(spec)
    return [f"shard {index}/{count} (1-based), durations from "
            f"{config.getoption('durations_file') or 'nowhere: every test counts the same'}"]


class _Durations:
    """Sums each test's setup, call and teardown time (on the xdist controller too)."""

    def __init__(self, config):
        self.config = config
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report):
        nodeid = report.nodeid.split("@", 1)[0]  # without xdist's loadgroup suffix
        self.seconds[nodeid] = self.seconds.get(nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session):
        if hasattr(self.config, "workerinput") or not self.seconds:
            return
        path = self.config.getoption("durations_file")
        merged = load_durations(path)
        merged.update({k: round(v, 3) for k, v in self.seconds.items()})
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")


def pytest_configure(config):
    if config.getoption("shard"):
        parse_shard(config.getoption("shard"))  # a bad spec fails before collection
    if config.getoption("save_durations"):
        if not config.getoption("durations_file"):
            raise pytest.UsageError("--save-durations: expected --durations-file=PATH beside "
                                    "it, got none")
        config.pluginmanager.register(_Durations(config), "sparse-attn-durations")


def main(argv=None) -> int:
    """`python -m sparse_attn_conformance.nightly.sharding merge OUT.json [IN.json ...]`: one
    durations file from several shards' (the nightly's merge job keeps it for the next night)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "merge":
        print("usage: python -m sparse_attn_conformance.nightly.sharding merge OUT.json [IN.json ...]",
              file=sys.stderr)
        return 2
    Path(args[1]).write_text(json.dumps(merge_durations(args[2:]), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
