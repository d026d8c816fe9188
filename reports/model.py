"""The report's data: one JSON document per run, and merging several runs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

SCHEMA = "sparse-attn-conformance/1"

#: Cell values of the conformance matrix.
PASS, FAIL, NOT_EXERCISED, EXPECTED_FAIL, UNEXPECTED_PASS = (
    "pass", "fail", "not exercised", "expected fail", "unexpected pass")
_CELL = {"passed": PASS, "failed": FAIL, "skipped": NOT_EXERCISED, "xfailed": EXPECTED_FAIL,
         "xpassed": UNEXPECTED_PASS}


def preconditions(pre) -> dict:
    return {"canonical_rows": pre.canonical_rows, "finite_sinks": pre.finite_sinks,
            "dims": {k: list(v) for k, v in pre.dims.items()}, "note": pre.note}


def run_stem(run: dict) -> str:
    """A file name stem for a run: the kernel spec, made safe, and the profile."""
    spec = re.sub(r"[^A-Za-z0-9_.-]+", "_", run["kernel_spec"])[:60].strip("_") or "kernels"
    return f"conformance-{spec}-{run['profile']}"


def write_json(run: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(run, f, indent=1, sort_keys=False)


def load(paths: Iterable[str]) -> list[dict]:
    runs = []
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        if run.get("schema") != SCHEMA:
            raise ValueError(f"{path}: expected schema {SCHEMA!r}, got {run.get('schema')!r}")
        runs.append(run)
    return runs


def cell(result: dict) -> str:
    return _CELL[result["status"]]


def matrix(runs: list[dict]) -> tuple[list[str], list[str], dict]:
    """Kernels (rows), properties (columns) and `{(kernel, property): cell}` over all runs;
    contract findings are left out (reported apart)."""
    kernels, props, cells = [], [], {}
    for run in runs:
        for r in run["results"]:
            if r.get("contract_finding"):
                continue
            if r["kernel"] not in kernels:
                kernels.append(r["kernel"])
            if r["property"] not in props:
                props.append(r["property"])
            cells[(r["kernel"], r["property"])] = cell(r)
    return kernels, props, cells


def kernel_info(runs: list[dict]) -> dict:
    out = {}
    for run in runs:
        out.update(run["kernels"])
    return out
