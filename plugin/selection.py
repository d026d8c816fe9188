"""The plugin's kernel selection: the kernels the properties run on (`--kernel`, else
`$SPARSE_ATTN_KERNEL`, else the default), every test with a `kernel` argument parametrised
by them, the report header that names them, the share of each profile's examples a slow
kernel declares (`example_fraction`), and `--first-kill`.

Registered by `plugin.entry` only when the suite was asked for. The kernel a test
runs on is read from its parametrisation in one place (`kernel_of`) and travels with every
report of the test in `user_properties` (`conformance.recorder.TEST_KEY`).
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import settings

from sparse_attn_conformance.conformance.recorder import TEST_KEY
from sparse_attn_conformance.contracts import (
    CONVENTIONS,
    DEFAULT_CONVENTION,
    ContractError,
    formats,
)
from sparse_attn_conformance.kernels import registry
from sparse_attn_conformance.kernels.interface import (
    KernelUnderTest,
    max_packed_batch_of,
    unavailable_reason,
)
from sparse_attn_conformance.plugin import hypothesis_hooks, profiles

ENV_KERNEL = "SPARSE_ATTN_KERNEL"
ENV_CONTRACT = "SPARSE_ATTN_CONTRACT"
ENV_KV_FORMAT = "SPARSE_ATTN_KV_FORMAT"


def contract_override(config) -> str | None:
    """The calling convention `--contract` (or `$SPARSE_ATTN_CONTRACT`) imposes on every
    kernel of the run, or None (each kernel's own declaration holds)."""
    name = config.getoption("contract", None) or os.environ.get(ENV_CONTRACT) or None
    if name is not None and name not in CONVENTIONS:
        raise pytest.UsageError(f"--contract: expected one of {CONVENTIONS}, got {name!r}")
    return name


def kv_format_override(config) -> tuple[str, ...] | None:
    """The cache formats `--kv-format` (or `$SPARSE_ATTN_KV_FORMAT`) imposes on every kernel
    of the run, or None (each kernel's own `kv_format` holds)."""
    spec = config.getoption("kv_format", None) or os.environ.get(ENV_KV_FORMAT) or None
    if spec is None:
        return None
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    bad = [n for n in names if n not in formats.NAMES]
    if bad or not names:
        raise pytest.UsageError(f"--kv-format: expected one or more of {formats.NAMES} "
                                f"(comma-separated), got {spec!r}")
    return names


def kernel_spec(config) -> str:
    """The kernel spec of this run: `--kernel`, else `$SPARSE_ATTN_KERNEL`, else the default
    kernel of the run's convention (`--contract`, else v1)."""
    return (config.getoption("kernel") or os.environ.get(ENV_KERNEL)
            or registry.DEFAULT_KERNELS[contract_override(config) or DEFAULT_CONVENTION])


def kernels(config) -> list[KernelUnderTest]:
    """The kernels under test; a spec that loads nothing is a usage error."""
    override = contract_override(config)
    try:
        found = [registry.kernel_under_test(n) for n in registry.expand(kernel_spec(config))]
    except (LookupError, ContractError) as exc:
        raise pytest.UsageError(str(exc)) from exc
    if override is not None:
        found = [dataclasses.replace(k, convention=override) for k in found]
    kv = kv_format_override(config)
    if kv is not None:
        found = [dataclasses.replace(k, kv_formats=kv) for k in found]
    if config.getoption("no_packing"):
        found = [dataclasses.replace(k, max_packed_batch=0) for k in found]
    return found


def convention_of_module(module) -> str | None:
    """The convention a property module is about: `conformance.v1.*` and `conformance.v2.*`
    are one convention's own properties; the others (`conformance.test_*`) hold for every
    convention (None)."""
    parts = module.__name__.split(".")
    return next((p for p in parts if p in CONVENTIONS), None)


def kernel_of(item) -> KernelUnderTest | None:
    """The kernel a test item runs on, or None for a test not parametrised by kernel."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("kernel") if callspec else None


def identity(item) -> dict:
    """What the reports need to know of a test: the node id that selects it (without the
    `@group` that xdist's loadgroup appends), its file, the property (the test function)
    and the kernel's name."""
    nodeid = f"{item.parent.nodeid}::{item.name}"
    kernel = kernel_of(item)
    return {"nodeid": nodeid, "file": nodeid.split("::", 1)[0],
            "property": getattr(item, "originalname", item.name),
            "kernel": kernel.name if kernel is not None else None}


def identity_of(report) -> dict | None:
    """The identity a test's report carries (see `identity`), or None."""
    return next((v for k, v in getattr(report, "user_properties", ()) if k == TEST_KEY), None)


def pytest_report_header(config):
    seed = config.getoption("hypothesis_seed", None)
    lines = [f"sparse-attn conformance: kernel={kernel_spec(config)} "
             f"profile={settings.get_current_profile_name()} "
             f"seed={seed if seed is not None else 'random'} "
             f"(derandomize={settings.default.derandomize}, work budget {profiles.budget()})"]
    try:
        under_test = kernels(config)
    except pytest.UsageError:
        return lines  # collection reports it
    conventions = sorted({k.convention for k in under_test})
    lines.append(f"  calling convention: {', '.join(conventions)} (docs/contract.md; "
                 f"--contract overrides what a kernel declares)")
    for k in under_test:
        if k.kv_formats != (formats.BF16,):
            lines.append(f"  {k.name}: cache format(s) {', '.join(k.kv_formats)} "
                         f"(docs/contract.md section 12; --kv-format overrides)")
        declared = max_packed_batch_of(k.fn)
        if declared:
            lines.append(f"  {k.name}: declares max_packed_batch={declared}: independent calls "
                         f"are packed along B" + (" (off: --no-packing)"
                                                  if config.getoption("no_packing") else ""))
        if k.example_fraction < 1:
            lines.append(f"  {k.name}: declares example_fraction={k.example_fraction:g}: each "
                         f"property runs that share of the profile's max_examples (at least 3)")
    return lines


#: The suite's own v2 window-metadata builder, always checked.
SUITE_WINDOW_BUILDER = "sparse_attn_conformance.strategies.v2.windows:window_rows"


@dataclasses.dataclass(frozen=True)
class WindowBuilder:
    """A v2 window-metadata builder under test (conformance/v2/test_window_producer.py)."""

    name: str
    fn: object

    def __repr__(self) -> str:
        return f"WindowBuilder({self.name!r})"


def window_builders(config) -> list[WindowBuilder]:
    """The suite's builder, and the one `--window-builder` names."""
    specs = [SUITE_WINDOW_BUILDER]
    if config.getoption("window_builder", None):
        specs.append(config.getoption("window_builder"))
    try:
        return [WindowBuilder(s, registry.load(s)) for s in specs]
    except LookupError as exc:
        raise pytest.UsageError(str(exc).replace("--kernel", "--window-builder")) from exc


def pytest_generate_tests(metafunc):
    if "window_builder" in metafunc.fixturenames:
        builders = window_builders(metafunc.config)
        metafunc.parametrize("window_builder", builders, ids=[b.name for b in builders],
                             scope="session")
    if "kernel" in metafunc.fixturenames:
        params = []
        wanted = convention_of_module(metafunc.module)
        under_test = kernels(metafunc.config)
        for k in under_test:
            if wanted is not None and k.convention != wanted:
                continue
            reason = unavailable_reason(k.fn)
            marks = [pytest.mark.skip(reason=f"{k.name} cannot run here: {reason}")] if reason else []
            params.append(pytest.param(k, id=k.name, marks=marks))
        if not params:
            # a property of one convention with no kernel of it in the run: one visible skip
            names = ", ".join(f"{k.name} ({k.convention})" for k in under_test)
            params.append(pytest.param(None, id=f"no-{wanted}-kernel", marks=pytest.mark.skip(
                reason=f"a {wanted} property; the kernels under test are {names} (a kernel "
                       f"declares `convention`, or pass --contract={wanted})")))
        metafunc.parametrize("kernel", params, scope="session")


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the marks
def pytest_collection_modifyitems(config, items):
    # a run of one convention runs (and reports) that convention's properties and
    # findings only: another convention's tests are deselected, not skipped
    conventions = {k.convention for k in kernels(config)}
    other = [item for item in items if (c := _convention_of_item(item)) is not None
             and c not in conventions]
    if other:
        config.hook.pytest_deselected(items=other)
        drop = set(other)
        items[:] = [item for item in items if item not in drop]
    first_kill = config.getoption("first_kill")
    for item in items:
        who = identity(item)
        item.user_properties.append((TEST_KEY, who))
        if first_kill:
            # one worker per kernel, so that each worker knows its kernels' kills
            item.add_marker(pytest.mark.xdist_group(who["kernel"] or "none"))


def _convention_of_item(item) -> str | None:
    module = getattr(item, "module", None)
    return convention_of_module(module) if module is not None else None


#: kernel name -> the property that killed it (with --first-kill)
_killed: dict[str, str] = {}


def pytest_runtest_setup(item):
    kernel = kernel_of(item)
    if kernel is not None and item.config.getoption("first_kill") and kernel.name in _killed:
        pytest.skip(f"not run: {kernel.name} was already killed by {_killed[kernel.name]}")


def pytest_runtest_logreport(report):
    who = identity_of(report)
    if report.failed and who and who["kernel"] and "contract_finding" not in report.keywords:
        _killed.setdefault(who["kernel"], who["property"])


#: the shrink budget (seconds) a test ran under, for the report (`plugin.reporting`)
SHRINK_BUDGET = pytest.StashKey[float]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    kernel = kernel_of(item)
    seconds = item.config.getoption("shrink_seconds", None) or (
        kernel.shrink_seconds if kernel else None)
    if hasattr(item.obj, "hypothesis"):
        hypothesis_hooks.light_failures(item.obj)
    with hypothesis_hooks.scaled_examples(item.obj, kernel.example_fraction if kernel else 1.0), \
            hypothesis_hooks.shrink_budget(seconds) as budget:
        item.stash[SHRINK_BUDGET] = budget
        return (yield)
