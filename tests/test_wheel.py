"""The suite as its users get it: the wheel (built from the sdist), installed into a fresh
virtual environment (not editable), run from another project's directory that has its own
`kernels`, `plugin`, `attention` and `strategies` packages and tests.

One test, in steps, because every step needs the environment the first ones build (a
minute of installing); a failed step says which.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "sparse_attn_conformance"

#: The foreign project: its own packages with the generic names the suite must not take.
FOREIGN = {
    "kernels/__init__.py": "WHO = 'the foreign project'\n",
    "kernels/mine.py": '''\
"""The project's own kernels: one correct (it calls the suite's reference), one that
drops the attention sink."""
import torch

from sparse_attn_conformance.kernels.torch.reference import sparse_attn as _reference


def attn(**kw):
    return _reference(**kw)


def attn_no_sink(**kw):
    kw["attn_sink"] = torch.full_like(kw["attn_sink"], float("-inf"))
    return _reference(**kw)
''',
    "plugin/__init__.py": "WHO = 'the foreign project'\n",
    "attention/__init__.py": "WHO = 'the foreign project'\n",
    "strategies/__init__.py": "WHO = 'the foreign project'\n",
    "tests/__init__.py": "",
    "tests/test_own.py": '''\
"""The project's own tests: its packages, and Hypothesis as it configures it."""
from hypothesis import given, settings, strategies as st

import attention
import kernels
import plugin
import strategies


def test_its_own_packages():
    assert {m.WHO for m in (attention, kernels, plugin, strategies)} == {"the foreign project"}


@given(st.integers())
def test_its_own_hypothesis_profile(n):
    assert settings.default.max_examples == 100  # Hypothesis' own default, not a suite profile
''',
}


def run(cmd, cwd, env=None, timeout=900):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def checked(res, what):
    assert res.returncode == 0, f"{what}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def replay_line(output: str) -> str:
    """The command under the failure's "replay this failure" section."""
    m = re.search(r"replay this failure[ -]*\n(pytest [^\n]+)", output)
    assert m, f"no replay line in:\n{output[-3000:]}"
    return m.group(1)


def test_the_wheel_in_a_foreign_project(tmp_path):
    dist = tmp_path / "dist"
    # 1. the sdist, then the wheel built from it (so the sdist holds everything the wheel needs)
    checked(run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], ROOT),
            "python -m build")
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    assert sdist.name.startswith("sparse_attn_conformance-")
    with zipfile.ZipFile(wheel) as z:
        tops = {n.split("/")[0] for n in z.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {PACKAGE}, tops

    # 2. a fresh environment, the wheel installed as a user installs it (and the registry's
    # `kernels` package beside it, a name this suite must not take)
    venv = tmp_path / "venv"
    checked(run([sys.executable, "-m", "venv", str(venv)], tmp_path), "venv")
    py, bindir = venv / "bin" / "python", venv / "bin"
    checked(run([str(py), "-m", "pip", "install", "-q", str(wheel), "pytest-xdist", "kernels"],
                tmp_path), "pip install the wheel")
    site = Path(checked(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            tmp_path), "purelib").stdout.strip())
    ours = checked(run([str(py), "-c", "import importlib.metadata as m, json; print(json.dumps("
                        "sorted({str(f).split('/')[0] for f in m.files('sparse-attn-conformance')})))"],
                       tmp_path), "installed files").stdout
    assert {t for t in json.loads(ours) if not t.endswith(".dist-info") and t != ".."} == {PACKAGE}
    assert (site / PACKAGE / "reports" / "templates" / "report.html.j2").is_file()
    both = checked(run([str(py), "-c", "import kernels, sparse_attn_conformance.kernels.registry as r; "
                        "print(kernels.__file__); print(r.__file__)"], tmp_path), "both import")
    hub, suite = both.stdout.split()
    assert Path(hub).parent == site / "kernels" and Path(suite).is_relative_to(site / PACKAGE)

    # 3. the foreign project, with its own packages and tests
    project = tmp_path / "project"
    for rel, text in FOREIGN.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SPARSE_ATTN_", "PYTEST_"))},
           "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    own = checked(run(["pytest", "-q", "-p", "no:cacheprovider", "tests"], project, env), "own tests")
    assert "2 passed" in own.stdout and "sparse-attn" not in own.stdout

    # 4. green: the smoke profile on the project's kernel and on a built-in one, the report
    # where the user asks
    report = project / "conformance-report"
    green = checked(run(["pytest", "--pyargs", PACKAGE, "--kernel=kernels.mine:attn,reference",
                         "--hypothesis-profile=smoke", "-n", "2", f"--report-dir={report}", "-q"],
                        project, env), "smoke, correct kernels")
    assert re.search(r"\b\d+ passed", green.stdout) and not re.search(r"\b\d+ failed", green.stdout)
    assert list(report.glob("conformance-*.html")) and list(report.glob("conformance-*.json"))
    assert not list((site / PACKAGE).rglob("conformance-*.json"))

    # 5. red: a faulty kernel of the project fails, and its replay line reproduces it from here
    red = run(["pytest", "--pyargs", PACKAGE, "--kernel=kernels.mine:attn_no_sink",
               "--hypothesis-profile=smoke", "-p", "no:xdist", "-x", "-q"], project, env)
    assert red.returncode == 1, red.stdout[-3000:]
    line = replay_line(red.stdout)
    assert shlex.split(line)[1:3] == ["--pyargs", shlex.split(line)[2]] and \
        shlex.split(line)[2].startswith(f"{PACKAGE}.conformance."), line
    again = run(shlex.split(line), project, env)
    assert again.returncode == 1 and "1 failed" in again.stdout, again.stdout[-3000:]
    assert replay_line(again.stdout) == line
