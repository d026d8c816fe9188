"""The pytest plugin's command line: listing kernels, choosing them, bad choices; the plugin
stays out of a project that did not ask for the suite."""

import subprocess
import sys

from sparse_attn_conformance.kernels import registry


def pytest_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pytest", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_list_kernels_prints_every_builtin_name():
    res = pytest_cli("conformance", "--list-kernels")
    assert res.returncode == 0, res.stderr
    names = res.stdout.split()
    assert names == registry.builtin_names()
    assert len([n for n in names if n.startswith("mutant-")]) >= 20


def test_unknown_kernel_is_a_clear_usage_error():
    res = pytest_cli("conformance", "--kernel=nonesuch", "-q")
    assert res.returncode != 0
    assert "expected a built-in name (see --list-kernels) or module:callable, got 'nonesuch'" \
        in res.stdout + res.stderr


def test_module_callable_kernel_and_env_variable(tmp_path):
    (tmp_path / "my_kernel.py").write_text(
        "from sparse_attn_conformance.kernels.torch.reference import sparse_attn as _ref\n"
        "def attn(**kw):\n    return _ref(**kw)\n")
    import os
    env = dict(os.environ, SPARSE_ATTN_KERNEL="my_kernel:attn",
               PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    res = subprocess.run([sys.executable, "-m", "pytest", "conformance/v1/test_regression_fixture.py",
                          "-q"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "[my_kernel:attn]" in subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/v1/test_regression_fixture.py", "--co", "-q"],
        capture_output=True, text=True, env=env, timeout=600).stdout


def test_header_names_kernel_profile_and_seed():
    res = pytest_cli("conformance/v1/test_regression_fixture.py", "--kernel=reference",
                     "--hypothesis-profile=ci", "--hypothesis-seed=7")
    assert "sparse-attn conformance: kernel=reference profile=ci seed=7" in res.stdout


def test_glob_and_comma_lists_expand():
    assert registry.expand("reference, mutant-sink-*") == [
        "reference", "mutant-sink-dropped", "mutant-sink-value-row", "mutant-sink-wrong-sign",
        "mutant-sink-unshifted"]


def test_slow_kernel_runs_its_declared_share_of_examples(tmp_path):
    import json
    import os
    (tmp_path / "slow_kernel.py").write_text(
        "from sparse_attn_conformance.kernels.torch.reference import sparse_attn as _ref\n"
        "def attn(**kw):\n    return _ref(**kw)\n"
        "attn.example_fraction = 0.1\n"
        "def bad(**kw):\n    return _ref(**kw)\n"
        "bad.example_fraction = 2\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/test_reference_match.py::test_matches_reference",
         "--kernel=slow_kernel:attn", "--hypothesis-profile=dev", f"--report-dir={tmp_path}/r",
         "-p", "no:randomly"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "slow_kernel:attn: declares example_fraction=0.1" in res.stdout
    [path] = list((tmp_path / "r").glob("conformance-*.json"))
    [r] = json.loads(path.read_text())["results"]
    assert r["examples"] == 3  # 10% of dev's 30
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/test_reference_match.py::test_matches_reference",
         "--kernel=slow_kernel:bad"], capture_output=True, text=True, env=env, timeout=600)
    assert "example_fraction: expected a number in (0, 1], got 2" in res.stdout + res.stderr


SLOW_FAULTY = """
import time
from sparse_attn_conformance.kernels.faulty.v1 import MUTANTS
from sparse_attn_conformance.kernels.torch.reference import sparse_attn as _ref
_faulty = MUTANTS["sink-dropped"]
def attn(**kw):
    time.sleep(0.05)  # a slow kernel: shrinking its failure costs seconds
    # wrong from two heads on: Hypothesis' first (simplest) example passes, so a failure
    # has something to shrink
    return (_faulty if kw["q"].shape[2] >= 2 else _ref)(**kw)
attn.shrink_seconds = 0.3
def bad(**kw):
    return _faulty(**kw)
bad.shrink_seconds = "fast"
"""


def test_shrinking_is_bounded_by_the_kernel_or_the_option(tmp_path):
    """A kernel's `shrink_seconds` bounds shrinking its failures, and the failure says it
    was cut short; `--shrink-seconds` overrides it; bad values are named errors."""
    import os
    (tmp_path / "slow_faulty.py").write_text(SLOW_FAULTY)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    test = "sparse_attn_conformance.conformance.test_sink_and_empty::test_zero_query_closed_form"

    def run(*args):
        # from tmp_path: its own example database, so no earlier run's shrunk example
        # is replayed first
        return subprocess.run([sys.executable, "-m", "pytest", "--pyargs", test,
                               "-p", "no:xdist", "-p", "no:cacheprovider",
                               "--hypothesis-profile=dev", *args],
                              capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)

    res = run("--kernel=slow_faulty:attn", f"--report-dir={tmp_path}/r")
    assert res.returncode == 1, res.stdout[-2000:]
    assert "shrinking cut short" in res.stdout
    assert "at its budget of 0.3 s" in res.stdout
    import json
    [path] = list((tmp_path / "r").glob("conformance-*.json"))
    [r] = json.loads(path.read_text())["results"]
    assert r["counterexample"]["shrinking"]["cut_short"] is True
    assert r["counterexample"]["shrinking"]["budget"] == 0.3
    res = run("--kernel=slow_faulty:attn", "--shrink-seconds=600")
    assert res.returncode == 1 and "shrinking cut short" not in res.stdout, res.stdout[-2000:]
    res = run("--kernel=slow_faulty:bad")
    assert "shrink_seconds: expected a finite number of seconds > 0, got 'fast'" in \
        res.stdout + res.stderr
    res = run("--kernel=reference", "--shrink-seconds=0")
    assert res.returncode != 0
    assert "--shrink-seconds: expected a finite number of seconds > 0, got '0'" in res.stderr


def test_a_run_of_one_convention_collects_only_its_properties():
    """Another convention's properties (and its contract findings) are deselected, not
    skipped: they are neither run nor reported."""
    res = pytest_cli("conformance", "--kernel=reference-v2", "--co", "-q")
    assert res.returncode == 0, res.stdout[-2000:]
    assert "conformance/v2/" in res.stdout and "conformance/v1/" not in res.stdout
    assert "deselected" in res.stdout
    res = pytest_cli("conformance", "--kernel=reference", "--co", "-q")
    assert "conformance/v1/test_position_causality.py" in res.stdout
    assert "conformance/v2/" not in res.stdout


FOREIGN_TEST = """
import pytest
from hypothesis import settings
from hypothesis.errors import InvalidArgument


@pytest.fixture
def kernel():
    return "mine"


def test_own_kernel(kernel, request):
    assert request.config.pluginmanager.has_plugin("sparse_attn_conformance")  # installed
    assert kernel == "mine"  # not parametrised by the suite
    # Hypothesis' own choice ("default", or its built-in "ci" where $CI is set), and none of
    # the suite's profiles registered
    assert settings.get_current_profile_name() in ("default", "ci")
    with pytest.raises(InvalidArgument):
        settings.get_profile("kill")
"""


def test_a_foreign_project_is_left_alone(tmp_path):
    """A project with the suite installed beside it: its own test with a `kernel` argument
    keeps its own fixture and Hypothesis' own profile; naming the plugin turns it on."""
    (tmp_path / "test_foreign.py").write_text(FOREIGN_TEST)
    res = pytest_cli("-p", "no:cacheprovider", "-p", "no:xdist", "test_foreign.py", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "sparse-attn conformance" not in res.stdout
    res = pytest_cli("-p", "no:cacheprovider", "-p", "sparse_attn_conformance", "--co", "-q",
                     "test_foreign.py", cwd=tmp_path)
    assert "test_foreign.py::test_own_kernel[pypto]" in res.stdout, res.stdout[-2000:]


def test_plugin_and_reports_import_nothing_of_each_other():
    code = (
        "import sys, importlib\n"
        "import sparse_attn_conformance.plugin.entry\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'\n"
        "             or m.split('.')[:2] in (['sparse_attn_conformance', 'reports'],\n"
        "                                    ['sparse_attn_conformance', 'kernels'])))\n"
        "for m in ('reports.collector', 'reports.html', 'reports.model', 'reports.__main__'):\n"
        "    importlib.import_module('sparse_attn_conformance.' + m)\n"
        "jobs = ('plugin.selection', 'plugin.reporting', 'plugin.replay')\n"
        "jobs = tuple('sparse_attn_conformance.' + j for j in jobs)\n"
        "print(sorted(m for m in sys.modules if m in jobs))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["[]", "[]"]
