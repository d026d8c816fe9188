"""Collects a conformance run's results as pytest reports them (on the xdist controller too,
where the per-test statistics arrive in `user_properties`) and writes the report."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata

from hypothesis import settings

from conformance.plugin import parse_nodeid, selectable_nodeid
from conformance.recorder import STATS_KEY
from conformance.replay import find_blob, replay_command
from reports import html, model

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
    """A pytest plugin object; registered by conformance.plugin when --report-dir is given."""

    def __init__(self, config):
        self.config = config
        self.dir = config.getoption("report_dir")
        self.results: dict[str, dict] = {}
        self.started = time.time()

    def pytest_runtest_logreport(self, report):
        parsed = parse_nodeid(report.nodeid)
        if not parsed:
            return
        path, test, kernel = parsed
        nodeid = selectable_nodeid(path, test, kernel)
        entry = self.results.setdefault(nodeid, {
            "nodeid": nodeid, "file": path, "property": test,
            "kernel": kernel or CONTRACT, "status": "passed", "seconds": 0.0, "message": "",
            "seq": len(self.results),  # execution order per worker
            "contract_finding": "contract_finding" in report.keywords,
        })
        entry["seconds"] += report.duration
        for key, value in report.user_properties:
            if key == STATS_KEY:
                entry.update(value)
        for title, content in report.sections:
            if title == "kernel diagnostics":
                entry["diagnostics"] = content
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
        if report.failed or hasattr(report, "wasxfail"):
            entry["replay"] = replay_command(entry["nodeid"], kernel,
                                             settings.get_current_profile_name(),
                                             find_blob(text))

    def pytest_sessionfinish(self, session):
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: the controller writes the report
        from conformance.plugin import kernel_spec, kernel_under_test
        from kernels import registry

        names = registry.expand(kernel_spec(self.config))
        kernels = {}
        for name in names:
            k = kernel_under_test(name)
            kernels[name] = {"faulty": k.faulty, "preconditions": model.preconditions(k.pre),
                             "unexercised": k.pre.unexercised()}
        run = {
            "schema": model.SCHEMA,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": time.time() - self.started,
            "kernel_spec": kernel_spec(self.config),
            "profile": settings.get_current_profile_name(),
            "seed": self.config.getoption("hypothesis_seed", None),
            "derandomize": settings.default.derandomize,
            "versions": versions(),
            "kernels": kernels,
            "results": sorted(self.results.values(), key=lambda r: (r["kernel"], r["seq"])),
        }
        os.makedirs(self.dir, exist_ok=True)
        stem = model.run_stem(run)
        model.write_json(run, os.path.join(self.dir, f"{stem}.json"))
        html.write([run], os.path.join(self.dir, f"{stem}.html"))
