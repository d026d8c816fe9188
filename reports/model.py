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


def failure_kind(result: dict) -> str | None:
    """How a failed result failed: "assertion" (a property's own check) or "kernel-error"
    (the kernel raised or crashed); None when the report does not say (an older report)."""
    return result.get("failure_kind") or (result.get("counterexample") or {}).get(
        "failure_kind")


def corners(runs: list[dict]) -> dict[str, str]:
    """The input-domain corners of the runs' coverage counts, name -> description, in the
    order the runs list them (a run without coverage, from an older report, adds none)."""
    out: dict[str, str] = {}
    for run in runs:
        for name, text in run.get("corners", {}).items():
            out.setdefault(name, text)
        for r in run["results"]:
            for name in r.get("coverage") or {}:
                out.setdefault(name, "")
    return out


def coverage(runs: list[dict]) -> dict[tuple[str, str], dict]:
    """`{(kernel, property): {"examples", "rejected", "coverage"}}`, summed over the runs;
    `coverage` is None where no run of that pair recorded it (an older report)."""
    out: dict[tuple[str, str], dict] = {}
    for run in runs:
        for r in run["results"]:
            row = out.setdefault((r["kernel"], r["property"]),
                                 {"examples": 0, "rejected": 0, "coverage": None})
            row["examples"] += r.get("examples") or 0
            row["rejected"] += r.get("rejected") or 0
            if r.get("coverage") is not None:
                cov = row["coverage"] = row["coverage"] or {}
                for name, n in r["coverage"].items():
                    cov[name] = cov.get(name, 0) + n
    return out


def kernel_info(runs: list[dict]) -> dict:
    out = {}
    for run in runs:
        out.update(run["kernels"])
    return out
