"""Collects a conformance run's results as pytest reports them (on the xdist controller too,
where each test's identity and statistics arrive in `user_properties`, and its diagnostics
and replay command in its sections) and writes the report."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata

from hypothesis import settings

from sparse_attn_conformance.conformance.recorder import (
    DIAGNOSTICS_SECTION,
    FAILURE_KIND_KEY,
    REPLAY_SECTION,
    STATS_KEY,
    TEST_KEY,
)
from sparse_attn_conformance.kernels import registry
from sparse_attn_conformance.reports import html, model
from sparse_attn_conformance.strategies.coverage import CORNERS, unexercised

#: The kernel column of a test that is not parametrised by kernel (a contract finding).
CONTRACT = "(contract)"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "pypto", "hypothesis", "pytest", "sparse-attn-conformance"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


class ReportCollector:
    """A pytest plugin object; registered by the suite's plugin when --report-dir is given,
    with the run's kernel spec."""

    def __init__(self, config, kernel_spec: str):
        self.config = config
        self.kernel_spec = kernel_spec
        self.dir = config.getoption("report_dir")
        self.results: dict[str, dict] = {}
        self.started = time.time()

    def pytest_runtest_logreport(self, report):
        who = next((v for k, v in report.user_properties if k == TEST_KEY), None)
        if who is None:
            return  # not a test of the suite's run
        entry = self.results.setdefault(who["nodeid"], {
            "nodeid": who["nodeid"], "file": who["file"], "property": who["property"],
            "kernel": who["kernel"] or CONTRACT, "status": "passed", "seconds": 0.0, "message": "",
            "seq": len(self.results),  # execution order per worker
            "contract_finding": "contract_finding" in report.keywords,
            # a test that drew no examples (skipped, or not a Hypothesis test) keeps zeros
            "examples": 0, "rejected": 0, "coverage": dict.fromkeys(CORNERS, 0),
        })
        entry["seconds"] += report.duration
        for key, value in report.user_properties:
            if key == STATS_KEY:
                entry.update(value)
            elif key == FAILURE_KIND_KEY:
                entry["failure_kind"] = value
        for title, content in report.sections:
            if title == DIAGNOSTICS_SECTION:
                entry["diagnostics"] = content
            elif title == REPLAY_SECTION:
                entry["replay"] = content
        text = str(report.longrepr) if report.longrepr else ""
        if hasattr(report, "wasxfail"):
            entry["status"] = "xfailed" if report.skipped else "xpassed"
            entry["message"] = report.wasxfail or text[-4000:]
        elif report.failed:
            entry["status"] = "failed"
            entry["message"] = text[-6000:]
        elif report.skipped:
            entry["status"] = "skipped"
            entry["message"] = report.longrepr[2] if isinstance(report.longrepr, tuple) else text

    def pytest_sessionfinish(self, session):
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: the controller writes the report
        kernels = {}
        for name in registry.expand(self.kernel_spec):
            k = registry.kernel_under_test(name)
            kernels[name] = {"faulty": k.faulty, "preconditions": model.preconditions(k.pre),
                             "unexercised": unexercised(k.pre), "bug_class": k.bug_class}
        run = {
            "schema": model.SCHEMA,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": time.time() - self.started,
            "kernel_spec": self.kernel_spec,
            "profile": settings.get_current_profile_name(),
            "seed": self.config.getoption("hypothesis_seed", None),
            # which part of a run split across machines (`--shard=I/N`), None if whole
            "shard": self.config.getoption("shard", None),
            "derandomize": settings.default.derandomize,
            "versions": versions(),
            "kernels": kernels,
            "corners": dict(CORNERS),
            "results": sorted(self.results.values(), key=lambda r: (r["kernel"], r["seq"])),
        }
        os.makedirs(self.dir, exist_ok=True)
        stem = model.run_stem(run)
        model.write_json(run, os.path.join(self.dir, f"{stem}.json"))
        html.write([run], os.path.join(self.dir, f"{stem}.html"))
