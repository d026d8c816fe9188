"""The pytest plugin's entry point (`pytest11` name `sparse_attn_conformance`): the suite's
command-line options, `--list-kernels`, and the switch that turns the suite on only when it
is asked for:

- the run collects the suite (`pytest --pyargs sparse_attn_conformance` from anywhere,
  `pytest conformance` in the suite's checkout, a node id inside it, or, in the checkout, a
  directory that contains it);
- `--kernel` (or another of the suite's options: `--report-dir`, `--first-kill`,
  `--replay`) is given;
- the plugin is named with `-p sparse_attn_conformance` (or its module,
  `-p sparse_attn_conformance.plugin.entry`).

Otherwise nothing of the suite touches the run: no Hypothesis profile is loaded, no test is
parametrised, no header or report is added, so a project that has the suite installed
beside it keeps its own tests as they are. When on, the plugin registers its jobs:
`plugin.profiles` (the default profile), `plugin.selection` (which kernels, and
`--first-kill`), `plugin.reporting` (statistics, diagnostics, `--report-dir`) and
`plugin.replay` (`--replay` and the replay line of every failure).

This module imports nothing of the suite at import time: it is imported by every pytest run
of an environment that has the suite installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

ENTRY_POINT = "sparse_attn_conformance"
#: The suite's one import package (this module is `<package>.plugin.entry`).
PACKAGE = __name__.rsplit(".", 2)[0]
#: The suite's package directory: the properties live here.
SUITE_DIR = Path(__file__).resolve().parent.parent / "conformance"
#: Hooks registered when the suite is on, by plugin name.
JOBS = ("plugin.selection", "plugin.reporting", "plugin.replay",
        # the pool and shards: registered after replay, so that among the
        # trylast collection hooks a shard is cut before --replay counts the selection
        "nightly.npu_pool", "plugin.features", "nightly.known_failures",
        "nightly.sharding", "nightly.example_db")
_SUITE_OPTIONS = ("kernel", "contract", "kv_format", "window_builder", "report_dir", "first_kill", "replay",
                  "shrink_seconds", "no_packing", "npu_cards", "shard", "example_db_from", "known_failures")


def pytest_addoption(parser):
    group = parser.getgroup("sparse-attn", "sparse decode attention conformance (on when "
                            "the run collects conformance/ or is given one of these options)")
    group.addoption("--kernel", default=None,
                    help="kernel(s) under test: a built-in name, a glob over built-in names "
                         "(mutant-*), or module:callable; comma-separated for several "
                         "(env SPARSE_ATTN_KERNEL; default pypto)")
    group.addoption("--contract", default=None, choices=("v1", "v2"),
                    help="the calling convention of the kernels under test, overriding what "
                         "each declares (env SPARSE_ATTN_CONTRACT; default: each kernel's "
                         "`convention`, v1 if none); without --kernel, picks that "
                         "convention's default kernel (pypto or pypto-v2)")
    group.addoption("--kv-format", default=None, metavar="FORMAT",
                    help="the cache format the kernels under test read, overriding what "
                         "each declares (env SPARSE_ATTN_KV_FORMAT): bf16, fp8_ds_mla, "
                         "fp8_ds_v4, or a comma-separated list (each example draws one); "
                         "default: each kernel's `kv_format`, bf16 if none")
    group.addoption("--window-builder", default=None, metavar="MODULE:CALLABLE",
                    help="a v2 window-metadata builder to check beside the suite's own "
                         "(conformance/v2/test_window_producer.py): called with position_ids, "
                         "ori_block_table, seq_per_batch, window_size, block")
    group.addoption("--list-kernels", action="store_true",
                    help="print the built-in kernel names, one per line, and exit")
    group.addoption("--report-dir", default=None,
                    help="write the conformance report (JSON, HTML, JUnit XML) here")
    group.addoption("--first-kill", action="store_true",
                    help="once a kernel fails a property, skip its remaining properties "
                         "(kill-rate runs; with xdist, pass --dist loadgroup)")
    group.addoption("--no-packing", action="store_true",
                    help="never pack independent calls into one call along B, even for a "
                         "kernel that declares max_packed_batch (to measure or bisect)")
    group.addoption("--shrink-seconds", type=_positive_seconds, default=None, metavar="SECONDS",
                    help="shrink each failure for at most SECONDS (default: the kernel's "
                         "shrink_seconds, else Hypothesis' 300 s); the report says when "
                         "shrinking was cut short")
    group.addoption("--replay", default=None, metavar="VERSION:BLOB",
                    help="replay one counterexample: hypothesis version and blob of the "
                         "@reproduce_failure line printed with a failure, or that whole line "
                         "(select a single test)")
    pool = parser.getgroup("sparse-attn-pool", "sparse decode attention conformance: a pool "
                           "of NPU cards and machines (each option inert unless given)")
    pool.addoption("--npu-cards", default=None, metavar="IDS",
                   help="pin each xdist worker to one of these NPU cards, e.g. 0-7 or 0,2,4-5 "
                        "(env SPARSE_ATTN_NPU_CARDS); worker gwK gets card K // workers-per-card")
    pool.addoption("--npu-workers-per-card", type=int, default=None, metavar="N",
                   help="xdist workers sharing one card (env SPARSE_ATTN_NPU_WORKERS_PER_CARD; "
                        "default 1)")
    pool.addoption("--npu-run-dir", default=None, metavar="DIR",
                   help="the run folder holding each worker's pypto output and logs "
                        "(env SPARSE_ATTN_NPU_RUN_DIR; default a new temp folder)")
    pool.addoption("--shard", default=None, metavar="I/N",
                   help="run shard I of N (1-based), balanced by --durations-file")
    pool.addoption("--durations-file", default=None, metavar="PATH",
                   help="per-test durations (JSON) that balance --shard; with "
                        "--save-durations this run's are merged into it")
    pool.addoption("--save-durations", action="store_true",
                   help="merge this run's per-test durations into --durations-file "
                        "(not pytest-split's --store-durations, so both can be installed)")
    pool.addoption("--example-db-from", default=None, metavar="DIR",
                   help="also replay the examples saved in DIR (a downloaded example-db "
                        "artifact, read-only, beside the local database)")
    pool.addoption("--known-failures", default=None, metavar="TOML",
                   help="known failures (by kernel and suite version) run as strict xfail "
                        "(env SPARSE_ATTN_KNOWN_FAILURES)")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"--shrink-seconds: expected a finite number of seconds > 0, got {text!r}")
    return value


def pytest_cmdline_main(config):
    if config.getoption("list_kernels"):
        from sparse_attn_conformance.kernels import registry

        for name in registry.builtin_names():
            print(name)
        return 0
    return None


def _collects_suite(config) -> bool:
    base = Path(config.invocation_params.dir)
    if config.args_source.name == "TESTPATHS":
        base = config.rootpath
    in_checkout = config.rootpath == SUITE_DIR.parent  # a run of the suite's own project
    for arg in config.args:
        name = arg.split("::")[0]
        if config.getoption("pyargs", False) and (
                name in (PACKAGE, f"{PACKAGE}.conformance")
                or name.startswith(f"{PACKAGE}.conformance.")):
            return True
        path = (base / name).resolve()
        if path == SUITE_DIR or SUITE_DIR in path.parents:
            return True
        if in_checkout and path in SUITE_DIR.parents:  # e.g. `pytest .` in the checkout
            return True
    return False


def asked_for(config) -> bool:
    """Whether this pytest run asked for the conformance suite (see the module docstring)."""
    named = set(config.getoption("plugins", None) or ())
    return (bool(named & {ENTRY_POINT, __name__})
            or any(config.getoption(o, None) for o in _SUITE_OPTIONS)
            or _collects_suite(config))


def _import_users_modules(config) -> None:
    """Import the modules of the run's `module:callable` kernels (and window builder) from
    the directory pytest was started in, first on the path as under `python -m pytest`,
    now: collecting the suite from site-packages puts site-packages first on the path
    (pytest's prepend import mode), where an installed package of the same top-level name
    (the registry's `kernels`, say) would shadow the user's. A module that does not import
    here is reported, with its spec, when the registry loads the kernel."""
    import importlib
    import os
    import sys

    here = str(config.invocation_params.dir)
    if here not in sys.path:
        sys.path.insert(0, here)
    specs = ",".join(filter(None, (config.getoption("kernel") or os.environ.get("SPARSE_ATTN_KERNEL"),
                                   config.getoption("window_builder"))))
    for spec in specs.split(","):
        module, sep, _ = spec.strip().partition(":")
        if sep and module not in sys.modules:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - the registry reports it, naming the spec
                pass


@pytest.hookimpl(tryfirst=True)  # the suite's profiles exist before Hypothesis loads one
def pytest_configure(config):
    if not asked_for(config):
        return
    import importlib

    from sparse_attn_conformance.nightly import npu_pool

    npu_pool.pin(config)  # before anything here imports torch (or torch_npu, or pypto)
    _import_users_modules(config)
    from sparse_attn_conformance.plugin import cores, features, profiles, reporting

    profiles.load(config)
    cores.share_cores(config)
    features.register(config)
    config.addinivalue_line("markers", "contract_finding: a property about the contract itself, "
                            "reported apart from kernel conformance")
    for name in JOBS:
        config.pluginmanager.register(importlib.import_module(f"{PACKAGE}.{name}"),
                                      f"{ENTRY_POINT}.{name}")
    reporting.register_report(config)
