"""The plugin's reporting: per-test statistics and a failed test's kind of failure
(`conformance.recorder`, travelling in `user_properties`), its "kernel diagnostics" section
(the kernel's optional `diagnose`), and, with `--report-dir`, the conformance report
(`reports.collector`, imported only then) with JUnit XML beside it.

Registered by `plugin.entry` only when the suite was asked for.
"""

from __future__ import annotations

import os

import pytest

from sparse_attn_conformance.conformance import harness, recorder
from sparse_attn_conformance.plugin.selection import SHRINK_BUDGET, kernel_of, kernel_spec


def register_report(config) -> None:
    """With `--report-dir`, register the report collector and put JUnit XML in that dir."""
    out = config.getoption("report_dir")
    if not out:
        return
    from sparse_attn_conformance.reports.collector import ReportCollector

    config.pluginmanager.register(ReportCollector(config, kernel_spec(config)),
                                  "sparse-attn-report")
    if not config.getoption("xmlpath", None) and not hasattr(config, "workerinput"):
        config.option.xmlpath = os.path.join(out, "junit.xml")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    recorder.begin()
    try:
        return (yield)
    finally:
        stats = recorder.end()
        if stats is not None:
            budget = item.stash.get(SHRINK_BUDGET, None)
            # Hypothesis' own word on why it stopped (its pytest plugin keeps the run's
            # statistics on the item: "Stopped because shrinking was very slow")
            cut = "shrinking was very slow" in str(getattr(item, "hypothesis_statistics", ""))
            shrunk = recorder.shrinking(stats, budget, cut) if budget is not None else None
            if shrunk is not None and stats.get("counterexample"):
                stats["counterexample"]["shrinking"] = shrunk
            item.user_properties.append((recorder.STATS_KEY, stats))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report says what kind of failure it was (`recorder.failure_kind`)
    and carries the kernel's diagnostics."""
    report = yield
    if call.when != "call" or not report.failed:
        return report
    if call.excinfo is not None:
        report.user_properties = [*report.user_properties, (
            recorder.FAILURE_KIND_KEY, recorder.failure_kind(call.excinfo.value))]
    shrunk = next((v["counterexample"].get("shrinking") for k, v in item.user_properties
                   if k == recorder.STATS_KEY and v.get("counterexample")), None)
    if shrunk and shrunk["cut_short"]:
        report.sections.append((recorder.SHRINKING_SECTION, (
            f"shrinking stopped after {shrunk['seconds']:.0f} s at its budget of "
            f"{shrunk['budget']:g} s (--shrink-seconds, the kernel's shrink_seconds, or "
            f"Hypothesis' 300 s): the failing example above may not be minimal; a rerun "
            f"resumes shrinking from it (the example database keeps it)")))
    kernel = kernel_of(item)
    text = harness.diagnose(kernel) if kernel is not None else None
    if text:
        report.sections.append((recorder.DIAGNOSTICS_SECTION, text))
    return report
