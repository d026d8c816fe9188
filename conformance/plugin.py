"""The pytest plugin: kernel selection, Hypothesis profiles, the report header, per-test
statistics and the conformance report. Registered through the `pytest11` entry point, so
`pytest conformance --kernel=...` works wherever the package is installed."""

from __future__ import annotations

import base64
import os
import re

import hypothesis
import pytest
from hypothesis import HealthCheck, settings

from conformance import harness, hypothesis_hooks, recorder
from conformance.harness import KernelUnderTest
from conformance.recorder import STATS_KEY
from conformance.replay import find_blob, parse_blob, replay_command
from kernels import registry
from kernels.contract import preconditions_of

ENV_KERNEL = "SPARSE_ATTN_KERNEL"

_COMMON = dict(
    deadline=None,  # kernel calls (compilation, an interpreter) have no useful deadline
    print_blob=True,  # every failure prints its @reproduce_failure blob
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
settings.register_profile("dev", max_examples=30, **_COMMON)
settings.register_profile("ci", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("nightly", max_examples=400, **_COMMON)
# the kill-rate run's default: dev's budget, derandomized so that CI's verdicts are stable
settings.register_profile("kill", max_examples=30, derandomize=True, **_COMMON)


def pytest_addoption(parser):
    group = parser.getgroup("sparse-attn", "sparse decode attention conformance")
    group.addoption("--kernel", default=None,
                    help="kernel(s) under test: a built-in name, a glob over built-in names "
                         "(mutant-*), or module:callable; comma-separated for several "
                         f"(env {ENV_KERNEL}; default {registry.DEFAULT_KERNEL})")
    group.addoption("--list-kernels", action="store_true",
                    help="print the built-in kernel names, one per line, and exit")
    group.addoption("--report-dir", default=None,
                    help="write the conformance report (JSON, HTML, JUnit XML) here")
    group.addoption("--first-kill", action="store_true",
                    help="once a kernel fails a property, skip its remaining properties "
                         "(kill-rate runs; with xdist, pass --dist loadgroup)")
    group.addoption("--replay", default=None, metavar="VERSION:BLOB",
                    help="replay one counterexample: hypothesis version and blob of the "
                         "@reproduce_failure line printed with a failure, or that whole line "
                         "(select a single test)")


def pytest_cmdline_main(config):
    if config.getoption("list_kernels"):
        for name in registry.builtin_names():
            print(name)
        return 0
    return None


def kernel_spec(config) -> str:
    return config.getoption("kernel") or os.environ.get(ENV_KERNEL) or registry.DEFAULT_KERNEL


def pytest_configure(config):
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("dev")
    config.addinivalue_line("markers", "contract_finding: a property about the contract itself, "
                            "reported apart from kernel conformance")
    if config.getoption("report_dir"):
        from reports.collector import ReportCollector
        config.pluginmanager.register(ReportCollector(config), "sparse-attn-report")
        if not config.getoption("xmlpath", None) and not hasattr(config, "workerinput"):
            config.option.xmlpath = os.path.join(config.getoption("report_dir"), "junit.xml")


def pytest_report_header(config):
    seed = config.getoption("hypothesis_seed", None)
    profile = settings.get_current_profile_name()
    lines = [f"sparse-attn conformance: kernel={kernel_spec(config)} profile={profile} "
             f"seed={seed if seed is not None else 'random'} "
             f"(derandomize={settings.default.derandomize})"]
    try:
        kernels = [kernel_under_test(n) for n in registry.expand(kernel_spec(config))]
    except LookupError:
        return lines
    for k in kernels:
        fraction = example_fraction(k)
        if fraction < 1:
            lines.append(f"  {k.name}: declares example_fraction={fraction:g}: each property "
                         f"runs that share of the profile's max_examples (at least 3)")
    return lines


_kernels: dict[str, KernelUnderTest] = {}


def kernel_under_test(name: str) -> KernelUnderTest:
    if name not in _kernels:
        fn = registry.load(name)
        _kernels[name] = KernelUnderTest(name=name, fn=fn, pre=preconditions_of(fn),
                                         faulty=registry.is_faulty(name))
    return _kernels[name]


def pytest_generate_tests(metafunc):
    if "kernel" in metafunc.fixturenames:
        try:
            names = registry.expand(kernel_spec(metafunc.config))
            kernels = [kernel_under_test(n) for n in names]
        except LookupError as exc:
            raise pytest.UsageError(str(exc)) from exc
        metafunc.parametrize("kernel", kernels, ids=names, scope="session")


def _kernel_param(item) -> KernelUnderTest | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("kernel") if callspec else None


def _kernel_of(item) -> str | None:
    k = _kernel_param(item)
    return k.name if k is not None else None


_killed: dict[str, str] = {}
NODEID_RE = re.compile(r"^(?P<path>[^:]+)::(?P<test>[^\[@]+)(\[(?P<kernel>[^@]+)\])?(@.*)?$")


def parse_nodeid(nodeid: str) -> tuple[str, str, str | None] | None:
    """`(path, test, kernel or None)` of a property's node id (xdist's loadgroup appends
    `@group`, dropped here), or None for any other node id."""
    m = NODEID_RE.match(nodeid)
    return (m["path"], m["test"], m["kernel"]) if m else None


def selectable_nodeid(path: str, test: str, kernel: str | None) -> str:
    """The node id to select a property's test with (without xdist's `@group`)."""
    return f"{path}::{test}" + (f"[{kernel}]" if kernel else "")


def pytest_runtest_setup(item):
    name = _kernel_of(item)
    if item.config.getoption("first_kill") and name in _killed:
        pytest.skip(f"not run: {name} was already killed by {_killed[name]}")


def pytest_runtest_logreport(report):
    parsed = parse_nodeid(report.nodeid)
    if report.failed and parsed and parsed[2] and "contract_finding" not in report.keywords:
        _killed.setdefault(parsed[2], parsed[1])


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the marks
def pytest_collection_modifyitems(config, items):
    if config.getoption("first_kill"):
        # one worker per kernel, so that each worker knows its kernels' kills
        for item in items:
            item.add_marker(pytest.mark.xdist_group(_kernel_of(item) or "none"))
    blob = config.getoption("replay")
    if not blob:
        return
    version, data = parse_blob(blob)
    if len(items) != 1:
        raise pytest.UsageError(f"--replay: expected exactly one selected test, got {len(items)}")
    try:
        base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise pytest.UsageError(f"--replay: expected a base64 blob, got {blob!r}") from exc
    hypothesis_hooks.replay(items[0].obj, version or hypothesis.__version__, data)


def example_fraction(kernel) -> float:
    """The share of each profile's examples a slow kernel asks for (`fn.example_fraction`)."""
    fraction = getattr(kernel.fn, "example_fraction", 1.0)
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise pytest.UsageError(
            f"kernel {kernel.name!r}: example_fraction: expected a number in (0, 1], got {fraction!r}")
    return float(fraction)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    recorder.begin()
    kernel = _kernel_param(item)
    fraction = example_fraction(kernel) if kernel is not None else 1.0
    try:
        with hypothesis_hooks.scaled_examples(item.obj, fraction):
            yield
    finally:
        stats = recorder.end()
        if stats is not None:
            item.user_properties.append((STATS_KEY, stats))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    kernel = _kernel_param(item)
    if call.when != "call" or not report.failed:
        return
    text = harness.diagnose(kernel) if kernel is not None else None
    if text:
        report.sections.append(("kernel diagnostics", text))
    parsed = parse_nodeid(item.nodeid)
    name = parsed[2] if parsed else None
    nodeid = selectable_nodeid(*parsed) if parsed else item.nodeid
    report.sections.append(("replay this failure", replay_command(
        nodeid, name, settings.get_current_profile_name(), find_blob(str(report.longrepr)))))
