"""The conformance report: JSON, HTML (checked in headless Chromium) and JUnit XML, merging,
and replaying a failure from its JSON line."""

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from reports import html, model

FAST = ["conformance/test_regression_fixture.py", "conformance/test_determinism.py",
        "conformance/test_sink_and_empty.py"]


def run_report(tmp_path, kernels, *extra):
    out = tmp_path / "report"
    res = subprocess.run([sys.executable, "-m", "pytest", *FAST, f"--kernel={kernels}",
                          f"--report-dir={out}", "-q", *extra],
                         capture_output=True, text=True, timeout=600)
    [path] = glob.glob(str(out / "conformance-*.json"))
    with open(path) as f:
        return res, out, path, json.load(f)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """One run over a correct kernel and a faulty one."""
    return run_report(tmp_path_factory.mktemp("mixed"), "reference,mutant-sink-dropped",
                      "--hypothesis-profile=ci")


def test_json_report_contents(mixed_run):
    res, out, path, run = mixed_run
    assert res.returncode == 1  # the faulty kernel fails
    assert run["schema"] == model.SCHEMA and run["profile"] == "ci"
    assert run["versions"]["torch"].startswith("2.13.0") and run["versions"]["hypothesis"]
    assert run["kernels"]["mutant-sink-dropped"]["faulty"] is True
    by = {(r["kernel"], r["property"]): r for r in run["results"]}
    ok = by[("reference", "test_zero_query_closed_form")]
    assert ok["status"] == "passed" and ok["examples"] > 0 and 0 <= ok["worst_ratio"] <= 1
    bad = by[("mutant-sink-dropped", "test_zero_query_closed_form")]
    assert bad["status"] == "failed"
    assert bad["counterexample"]["size"]["tokens"] >= 1
    assert "config: B=" in bad["counterexample"]["case"]
    assert "expected[" in bad["counterexample"]["error"]
    assert bad["replay"].startswith("pytest 'conformance/test_sink_and_empty.py::")
    assert os.path.exists(out / "junit.xml")
    assert os.path.exists(path[:-5] + ".html")


def test_replay_line_reproduces_the_failure(mixed_run):
    _, _, _, run = mixed_run
    bad = next(r for r in run["results"] if r["status"] == "failed")
    assert "--replay=6." in bad["replay"]
    res = subprocess.run([sys.executable, "-m", *shlex.split(bad["replay"])],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stdout[-3000:]
    assert "1 failed" in res.stdout
    # the replayed example is the shrunk counterexample itself
    assert bad["counterexample"]["case"].splitlines()[0] in res.stdout


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells = {}
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-kernel" in a:
            self._cell = (a["data-kernel"], a["data-property"], a.get("class"))

    def handle_data(self, data):
        if self._cell and data.strip():
            self.cells[self._cell[:2]] = (self._cell[2], data.strip())
            self._cell = None


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Chromium (Debian package chromium): see .ci/run")
        pytest.skip("not checked: no Chromium on this machine (apt-get install chromium)")
    return path


def render_in_chromium(page: str, tmp_path) -> str:
    """The DOM as a real headless browser built it."""
    res = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         f"file://{page}"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_html_matrix_renders_in_a_browser(mixed_run, tmp_path):
    _, _, path, run = mixed_run
    dom = render_in_chromium(path[:-5] + ".html", tmp_path)
    parser = _Cells()
    parser.feed(dom)
    for r in run["results"]:
        if r.get("contract_finding"):
            continue
        assert parser.cells[(r["kernel"], r["property"])] == (
            model.cell(r).replace(" ", "-"), model.cell(r))
    assert parser.cells[("mutant-sink-dropped", "test_zero_query_closed_form")][1] == "fail"
    assert parser.cells[("reference", "test_zero_query_closed_form")][1] == "pass"
    assert "<svg" in dom and "Failures (" in dom


def test_merged_page_shows_every_run(mixed_run, tmp_path):
    _, _, path, run = mixed_run
    other = dict(run, kernel_spec="tiled", results=[
        dict(r, kernel="tiled", status="skipped") for r in run["results"]
        if r["kernel"] == "reference"], kernels={"tiled": run["kernels"]["reference"]})
    page = tmp_path / "merged.html"
    html.write([run, other], str(page))
    parser = _Cells()
    parser.feed(page.read_text())
    assert parser.cells[("tiled", "test_zero_query_closed_form")] == (
        "not-exercised", "not exercised")
    assert ("reference", "test_zero_query_closed_form") in parser.cells


def test_merge_command(mixed_run, tmp_path):
    _, _, path, _ = mixed_run
    res = subprocess.run([sys.executable, "-m", "reports", "merge", path, path,
                          "-o", str(tmp_path / "m.html")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Conformance matrix" in (tmp_path / "m.html").read_text()
