"""The nightly GPU workflow (.github/workflows/nightly-gpu.yml), checked in simulation: no GPU
runner has run it. Its `run:` steps are read out of the YAML and each command is checked
against this checkout: the pytest options it passes exist (the suite's `pytest --help`
lists them), its kernel specs resolve (`kernels.registry.expand`, and their declarations
load), its Hypothesis profile exists, the report folders it writes are the ones the merge
step reads, and the modules it runs with `python -m` exist."""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_attn_conformance.kernels import registry
from sparse_attn_conformance.plugin import profiles

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "nightly-gpu.yml"
#: the GPU kernels of the catalogue the night must cover
GPU_KERNELS = {"triton", "flashmla", "sparse_attn_conformance.kernels.adapters.flashmla_fp8:sparse_attn_v4",
               "sparse_attn_conformance.kernels.adapters.flashmla_fp8:sparse_attn_v32"}


def run_blocks(text: str) -> list[str]:
    """The shell text of every `run:` step (block scalars `run: |` and one-liners), in order.
    A small reader for this file's shape, so that the test needs no YAML package."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*(?:- )?)run:\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        head = m.group(2).strip()
        if head not in ("|", ">"):
            blocks.append(head)
            i += 1
            continue
        key_indent = len(m.group(1))  # the column of `run:`; the body is deeper
        body = []
        i += 1
        while i < len(lines) and (not lines[i].strip()
                                  or len(lines[i]) - len(lines[i].lstrip()) > key_indent):
            body.append(lines[i].strip())
            i += 1
        blocks.append("\n".join(body))
    return blocks


def commands(block: str) -> list[list[str]]:
    """The commands of a shell block (continuations joined, comments and `&&` split), as
    argument lists."""
    text = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s*(?:&&|\|\|)\s*", line):
            if part.strip():
                out.append(shlex.split(part))
    return out


def all_commands() -> list[list[str]]:
    return [c for b in run_blocks(WORKFLOW.read_text()) for c in commands(b)]


def pytest_runs() -> list[list[str]]:
    return [c[1:] for c in all_commands() if c and c[0].endswith("/pytest")]


@functools.lru_cache(maxsize=1)
def pytest_help() -> str:
    """The suite's `pytest --help` (the plugin's options among them)."""
    res = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def options(args: list[str]) -> dict[str, str]:
    out = {}
    for a in args:
        if a.startswith("--"):
            key, _, value = a.partition("=")
            out[key] = value
    return out


def test_header_says_unverified():
    head = WORKFLOW.read_text().split("\nname:")[0]
    assert "UNVERIFIED" in head and "no GPU runner has run" in head


def test_runs_on_a_self_hosted_gpu_runner():
    text = WORKFLOW.read_text()
    assert re.search(r"runs-on: \[self-hosted, linux, .*gpu-h100", text)
    assert "actions/checkout@v4" in text and "actions/upload-artifact@v4" in text


def test_yaml_parses_when_a_parser_is_present():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(WORKFLOW.read_text())
    job = doc["jobs"]["gpu"]
    assert job["runs-on"][:2] == ["self-hosted", "linux"]
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert len(runs) == len(run_blocks(WORKFLOW.read_text()))


def test_installs_the_suite_with_triton_and_the_flashmla_wheel():
    installs = [c for c in all_commands() if "install" in c and any("pip" in x for x in c)]
    flat = [" ".join(c) for c in installs]
    assert any("-e .[test,triton]" in f for f in flat), flat
    assert any("--no-deps sgl-flash-mla==1.0.0" in f for f in flat), flat


def test_every_gpu_kernel_runs_in_the_nightly_profile_with_a_report():
    runs = pytest_runs()
    kernels = {options(r).get("--kernel") for r in runs}
    assert GPU_KERNELS <= kernels, kernels
    for r in runs:
        opts = options(r)
        assert r[0] == "conformance", r
        assert opts.get("--hypothesis-profile") == "nightly", r
        assert opts.get("--report-dir", "").startswith("report-"), r


def test_pytest_options_exist():
    known = set(re.findall(r"(--[a-z][a-z0-9-]*)", pytest_help()))
    for r in pytest_runs():
        for key in options(r):
            assert key in known, f"pytest has no option {key} (workflow run {r})"


def test_profiles_exist():
    for r in pytest_runs():
        assert options(r)["--hypothesis-profile"] in profiles.PROFILES


def test_kernel_specs_resolve_and_load():
    for r in pytest_runs():
        spec = options(r)["--kernel"]
        names = registry.expand(spec)
        assert names, spec
        for name in names:
            k = registry.kernel_under_test(name)
            assert k.fn is not None


def test_merge_reads_the_reports_the_runs_write():
    merges = [c for c in all_commands() if c[1:4] == ["-m", "sparse_attn_conformance.reports", "merge"]]
    assert len(merges) == 1, merges
    cmd = merges[0]
    assert importlib.util.find_spec("sparse_attn_conformance.reports.__main__") is not None
    assert "-o" in cmd and cmd[cmd.index("-o") + 1].endswith(".html")
    pattern = cmd[4]
    assert pattern == "report-*/conformance-*.json"
    for r in pytest_runs():
        assert options(r)["--report-dir"].startswith("report-")


def test_python_modules_exist():
    for c in all_commands():
        if len(c) > 2 and c[0].endswith("python") and c[1] == "-m":
            assert importlib.util.find_spec(c[2]) is not None, c
