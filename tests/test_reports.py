"""The conformance report: JSON, HTML (checked in headless Chromium) and JUnit XML, merging,
and replaying a failure from its JSON line."""

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.conformance import recorder
from sparse_attn_conformance.reports import html, model
from sparse_attn_conformance.strategies.config import Config
from sparse_attn_conformance.strategies.coverage import CORNERS

FAST = ["conformance/v1/test_regression_fixture.py", "conformance/test_determinism.py",
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
    assert bad["counterexample"]["failure_kind"] == bad["failure_kind"] == "assertion"
    diagnosis = bad["counterexample"]["diagnosis"]
    assert diagnosis["failing_rows"] >= 1
    assert diagnosis["hypotheses"][0] == dict(diagnosis["hypotheses"][0], explains=True,
                                              hypothesis="sink-dropped")
    picture = bad["counterexample"]["picture"]
    assert len(picture["tokens"]) == bad["counterexample"]["size"]["tokens"]
    assert os.path.exists(out / "junit.xml")
    assert os.path.exists(path[:-5] + ".html")


def test_json_report_counts_rejections_and_coverage(mixed_run):
    _, _, _, run = mixed_run
    assert run["corners"] == CORNERS
    for r in run["results"]:
        assert isinstance(r["examples"], int) and isinstance(r["rejected"], int)
        assert list(r["coverage"]) == list(CORNERS)  # every corner, zeros included
        assert all(0 <= n <= r["examples"] for n in r["coverage"].values())
    by = {(r["kernel"], r["property"]): r for r in run["results"]}
    empty = by[("reference", "test_empty_tokens_return_exact_zero")]
    # the property asks the strategy for an empty token: every example that ran has one
    assert empty["examples"] > 0 and empty["coverage"]["empty_token"] == empty["examples"]
    # draws Hypothesis discards (conformance.draw counts them), shrinking's above all
    assert sum(r["rejected"] for r in run["results"]) > 0
    drawn = by[("reference", "test_zero_query_closed_form")]
    assert sum(drawn["coverage"].values()) > 0
    fixture = by[("reference", "test_seed_causal_regression_fixture")]
    assert fixture["examples"] == 0 and set(fixture["coverage"].values()) == {0}


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
    # and the replayed failure's own replay line is that same line (Hypothesis prints no
    # blob for a failure it reproduced, so the plugin carries --replay's)
    assert bad["replay"] in res.stdout


def test_failure_tells_the_call_the_kernel_got(mixed_run):
    """The drawn case, then every argument of the call the property made: the zero-query
    property's `q` is zero there, and named as what the property changed."""
    _, _, _, run = mixed_run
    by = {(r["kernel"], r["property"]): r for r in run["results"]}
    call = by[("mutant-sink-dropped", "test_zero_query_closed_form")]["counterexample"]["call"]
    lines = call.splitlines()
    assert lines[0] == "the property changed q from the drawn case"
    q = next(line for line in lines if line.lstrip(" *").startswith("q:"))
    assert q.startswith(" * q: bfloat16 [") and set(q.split("= [")[1].rstrip("], .")
                                                     .split(", ")) <= {"0", "-0"}
    assert all(line.startswith("   ") for line in lines if "attn_sink:" in line)  # unchanged


def test_a_replay_that_no_longer_fails_passes_and_says_so(mixed_run):
    """The faulty kernel's shrunk failure replayed on the correct kernel (as after a fix):
    the test passes, the summary says the failure did not reproduce, and no replay line."""
    _, _, _, run = mixed_run
    bad = next(r for r in run["results"] if r["status"] == "failed")
    fixed = shlex.split(bad["replay"].replace(f"[{bad['kernel']}]", "[reference]")
                        .replace(f"--kernel={bad['kernel']}", "--kernel=reference"))
    res = subprocess.run([sys.executable, "-m", *fixed], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "1 passed" in res.stdout and "replay: did not reproduce" in res.stdout
    assert "the replayed failure no longer reproduces" in res.stdout
    assert "replay this failure" not in res.stdout and "--replay=" not in res.stdout


class _Heat(HTMLParser):
    """The heat maps' cells (their error / tolerance) and the lanes drawn beside them."""

    def __init__(self):
        super().__init__()
        self.ratios, self.lanes = [], {"live": 0, "ignored": 0, "blamed": 0}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and a.get("class") == "heat-cell":
            self.ratios.append(float(a["data-ratio"]))
            assert a["style"].startswith("background:hsl(")
        if tag == "span" and "lane" in (a.get("class") or "").split():
            for kind in self.lanes:
                self.lanes[kind] += kind in a["class"].split()


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
    # each failure shows the call its kernel got, the property's change first
    assert '<pre class="kernel-call">the property' in dom
    # and, for a failing comparison, its diagnosis and where it fails: a heat map of error
    # over tolerance per (token, head), past 1 somewhere, and each token's lanes
    assert '<li data-hypothesis="sink-dropped"><b>sink-dropped</b>' in dom
    heat = _Heat()
    heat.feed(dom)
    assert heat.ratios and max(heat.ratios) > 1
    assert heat.lanes["live"] >= 1
    assert_coverage_matches(dom, [run])


class _Coverage(HTMLParser):
    """The coverage tables: `{(kernel, property, column): (class, text)}` (property "" is
    a kernel's total row) and the corner columns' `{name: title}`."""

    def __init__(self):
        super().__init__()
        self.cells, self.titles, self.summaries = {}, {}, {}
        self._row = self._cell = self._corner = self._summary = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "details" and "coverage" in a.get("class", ""):
            self._summary = [a["data-kernel"], None, "open" in a]
        elif tag == "summary" and self._summary:
            self._summary[1] = ""
        elif tag == "tr" and "data-kernel" in a:
            self._row = (a["data-kernel"], a["data-property"])
        elif tag == "td" and self._row and "data-column" in a:
            self._cell = (*self._row, a["data-column"], a.get("class", ""))
        elif tag == "th" and "data-corner" in a:
            self.titles[a["data-corner"]] = a.get("title")

    def handle_endtag(self, tag):
        if tag == "summary" and self._summary:
            self.summaries[self._summary[0]] = (self._summary[1].strip(), self._summary[2])
            self._summary = None

    def handle_data(self, data):
        if self._summary and self._summary[1] is not None:
            self._summary[1] += data
        if self._cell and data.strip():
            self.cells[self._cell[:3]] = (self._cell[3], data.strip())
            self._cell = None


def assert_coverage_matches(page: str, runs: list[dict]) -> _Coverage:
    """Every result's examples, rejections and corner counts are on the page, zeros marked."""
    parser = _Coverage()
    parser.feed(page)
    names = model.corners(runs)
    assert parser.titles == names
    for (k, p), row in model.coverage(runs).items():
        assert parser.cells[(k, p, "examples")] == ("num", str(row["examples"]))
        assert parser.cells[(k, p, "rejected")] == ("num", str(row["rejected"]))
        for c in names:
            cls, text = parser.cells[(k, p, c)]
            if row["examples"] == 0 or row["coverage"] is None:
                assert (cls, text) == ("cov-none", "\u2013")
            else:
                n = row["coverage"][c]
                assert (cls, text) == ("num cov-zero" if n == 0 else "num", str(n))
    return parser


def hand_made_run(kernel="tiled", faulty=False):
    cov = dict.fromkeys(CORNERS, 0)
    return {
        "schema": model.SCHEMA, "created": "2024-01-01T00:00:00Z", "seconds": 1.0,
        "kernel_spec": kernel, "profile": "dev", "seed": None, "derandomize": False,
        "versions": {}, "corners": dict(CORNERS),
        "kernels": {kernel: {"faulty": faulty, "preconditions": {}, "unexercised": []}},
        "results": [
            {"kernel": kernel, "property": "test_a", "status": "passed", "seconds": 1.0,
             "examples": 5, "rejected": 2, "coverage": dict(cov, off_tile=5, empty_token=1)},
            {"kernel": kernel, "property": "test_b", "status": "failed", "seconds": 1.0,
             "examples": 3, "rejected": 0, "coverage": dict(cov, off_tile=1, strided=2),
             "failure_kind": "kernel-error",
             "counterexample": {"size": 1, "case": "config: B=1", "error": "RuntimeError: x",
                                "failure_kind": "kernel-error"}},
            {"kernel": kernel, "property": "test_c", "status": "skipped", "seconds": 0.0,
             "examples": 0, "rejected": 0, "coverage": cov},
        ]}


def test_coverage_table_on_a_hand_made_run(tmp_path):
    run = hand_made_run()
    page = html.render([run])
    parser = assert_coverage_matches(page, [run])
    assert parser.titles["strided"] == CORNERS["strided"]
    # the kernel's total row sums its properties; a corner no property reached is marked
    assert parser.cells[("tiled", "", "examples")] == ("num", "8")
    assert parser.cells[("tiled", "", "rejected")] == ("num", "2")
    assert parser.cells[("tiled", "", "off_tile")] == ("num", "6")
    assert parser.cells[("tiled", "", "long_context")] == ("num cov-zero", "0")
    assert parser.cells[("tiled", "test_c", "off_tile")] == ("cov-none", "\u2013")
    assert parser.summaries["tiled"] == (
        f"tiled: 8 examples, 2 rejected, 3 of {len(CORNERS)} corners reached", True)
    assert html.COVERAGE_TEXT in unescape(page)
    assert 'data-failure-kind="kernel-error"' in page
    assert "<script" not in page and "src=" not in page and "href=" not in page


def test_coverage_of_a_faulty_kernel_is_folded_and_runs_are_summed():
    a, b = hand_made_run(), hand_made_run("mutant-x", faulty=True)
    page = html.render([a, b, a])
    parser = assert_coverage_matches(page, [a, b, a])
    assert parser.cells[("tiled", "test_a", "examples")] == ("num", "10")
    assert parser.summaries["tiled"][1] is True and parser.summaries["mutant-x"][1] is False


def test_merge_with_a_report_without_coverage(tmp_path):
    """A report written before the coverage counts (same schema) still merges."""
    new = hand_made_run()
    old = hand_made_run("reference")
    del old["corners"]
    for r in old["results"]:
        for key in ("examples", "rejected", "coverage", "failure_kind"):
            r.pop(key, None)
        r.get("counterexample", {}).pop("failure_kind", None)
    paths = []
    for i, run in enumerate((old, new)):
        paths.append(str(tmp_path / f"r{i}.json"))
        model.write_json(run, paths[-1])
    res = subprocess.run([sys.executable, "-m", "sparse_attn_conformance.reports", "merge", *paths,
                          "-o", str(tmp_path / "m.html")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "m.html").read_text()
    parser = assert_coverage_matches(page, model.load(paths))
    assert parser.cells[("reference", "test_a", "off_tile")] == ("cov-none", "\u2013")
    assert parser.cells[("tiled", "test_a", "off_tile")] == ("num", "5")


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
    res = subprocess.run([sys.executable, "-m", "sparse_attn_conformance.reports", "merge", path, path,
                          "-o", str(tmp_path / "m.html")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Conformance matrix" in (tmp_path / "m.html").read_text()


class _Laid:
    """Real `Inputs` with a `layout` mapping (the field the strategies are gaining)."""

    def __init__(self, inputs, layout):
        self._inputs, self.layout = inputs, layout

    def __getattr__(self, name):
        return getattr(self._inputs, name)


def hand_inputs(scale=-0.5):
    """B=1, S=2, H=4 (off the 16-tile), D=8, WIN=4, TOPK=6, BLOCK=4; seqused_kv 5, token 0
    with no live entry, a garbage id in an unused compressed block-table column."""
    from sparse_attn_conformance.contracts.v1 import Inputs

    topk = torch.tensor([[[-1] * 6, [0, 1, 2, 3, 4, -1]]], dtype=torch.int32)
    return Inputs(q=torch.ones(1, 2, 4, 8, dtype=torch.bfloat16),
                  ori_kv=torch.ones(1, 4, 8, dtype=torch.bfloat16),
                  ori_block_table=torch.zeros(1, 1, dtype=torch.int32),
                  cmp_kv=torch.ones(1, 4, 8, dtype=torch.bfloat16),
                  cmp_block_table=torch.tensor([[0, 7]], dtype=torch.int32),
                  topk_idxs=topk, attn_sink=torch.zeros(4, dtype=torch.float32),
                  seqused_kv=torch.tensor([5], dtype=torch.int32), softmax_scale=scale,
                  window_size=4)


def fake_case(layout=None, extremes=False, dominant=False, scale=-0.5):
    """A hand-made case on `hand_inputs`, with start_pos 3 (the ring wraps)."""
    cfg = Config(B=1, S=2, H=4, D=8, WIN=4, IDX_TOPK=2, BLOCK=4, ratio=4, softmax_scale=scale)
    return SimpleNamespace(config=cfg, inputs=_Laid(hand_inputs(scale), layout or {}),
                           start_pos=(3,), extremes=extremes, dominant=dominant, path="CSA",
                           describe=lambda: "config: B=1 S=2 (fake)",
                           size=lambda: {"B": 1, "S": 2, "tokens": 2, "live_entries": 5})


FAKE_CORNERS = ["off_tile", "nonpositive_scale", "garbage_table", "wrapped_ring", "empty_token"]


def test_recorder_counts_examples_rejections_and_corners():
    recorder.begin()
    recorder.note_rejected()
    recorder.note_rejected()
    with recorder.example(fake_case()):
        pass
    with recorder.example(fake_case(layout={"q": "transposed"}, extremes=True, dominant=True)):
        pass
    stats = recorder.end()
    assert (stats["examples"], stats["rejected"]) == (2, 2)
    assert list(stats["coverage"]) == list(CORNERS)
    assert {c for c, n in stats["coverage"].items() if n == 2} == set(FAKE_CORNERS)
    assert {c for c, n in stats["coverage"].items() if n == 1} == {
        "strided", "extreme_values", "dominant_key"}
    assert stats["coverage"]["large_dim"] == stats["coverage"]["long_context"] == 0
    assert stats["counterexample"] is None
    json.dumps(stats)  # travels to the report as JSON


@pytest.mark.parametrize("error, kind", [
    (AssertionError("expected[0] = 1"), "assertion"),
    (RuntimeError("the kernel crashed"), "kernel-error"),
    (ValueError("bad shape"), "kernel-error"),
])
def test_counterexample_says_what_kind_of_failure(error, kind):
    recorder.begin()
    with pytest.raises(type(error)), recorder.example(fake_case()):
        raise error
    ce = recorder.end()["counterexample"]
    assert ce["failure_kind"] == kind and ce["error"].startswith(type(error).__name__)


def test_failure_kind():
    from sparse_attn_conformance.conformance.failures import KernelFailure

    assert recorder.failure_kind(KernelFailure("kernel 'x' raised RuntimeError")) == "kernel-error"
    assert recorder.failure_kind(pytest.fail.Exception("check")) == "assertion"
    group = ExceptionGroup("two bugs", [RuntimeError("crash"), AssertionError("wrong")])
    assert recorder.failure_kind(group) == "assertion"
    assert recorder.failure_kind(ExceptionGroup("", [KeyError("k")])) == "kernel-error"


def test_corners_are_hypothesis_events(monkeypatch):
    """Inside a Hypothesis test each corner hit is an event (--hypothesis-show-statistics);
    outside one, counting them must not call `hypothesis.event` (it would raise)."""
    seen = []
    real = recorder.hypothesis.event
    monkeypatch.setattr(recorder.hypothesis, "event", lambda e: (seen.append(e), real(e)))
    recorder.begin()
    with recorder.example(fake_case()):
        pass
    assert seen == []

    @settings(max_examples=2, database=None)
    @given(st.just(None))
    def prop(_):
        with recorder.example(fake_case()):
            pass

    prop()
    assert seen[:len(FAKE_CORNERS)] == [f"corner: {c}" for c in FAKE_CORNERS]
    assert recorder.end()["coverage"]["off_tile"] == 1 + len(seen) // len(FAKE_CORNERS)


def test_failure_kind_in_the_report(tmp_path):
    """Through pytest and the report: a kernel that raises is caught by a kernel error, a
    wrong one by the property's assertion (a hand-made call: no strategies involved)."""
    (tmp_path / "bad_kernels.py").write_text(
        "from sparse_attn_conformance.kernels.torch.reference import sparse_attn as _ref\n"
        "def raises(**kw):\n    raise RuntimeError('boom')\n"
        "def zeros(**kw):\n    return _ref(**kw) * 0\n")
    (tmp_path / "test_kinds.py").write_text(
        "from sparse_attn_conformance.conformance.harness import call, expect_matches\n"
        "from tests.test_reports import hand_inputs\n"
        "def test_call(kernel):\n"
        "    inputs = hand_inputs(scale=0.5)\n"
        "    expect_matches(call(kernel, inputs), inputs)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "report"
    res = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_kinds.py"),
                          "--kernel=reference,bad_kernels:raises,bad_kernels:zeros",
                          f"--report-dir={out}", "-q", "-p", "no:xdist"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 1, res.stdout[-3000:]
    [path] = glob.glob(str(out / "conformance-*.json"))
    run = model.load([path])[0]
    kinds = {r["kernel"]: (r["status"], r.get("failure_kind")) for r in run["results"]}
    assert kinds == {"reference": ("passed", None),
                     "bad_kernels:raises": ("failed", "kernel-error"),
                     "bad_kernels:zeros": ("failed", "assertion")}, res.stdout[-3000:]
    page = open(path[:-5] + ".html").read()
    assert 'data-failure-kind="kernel-error"' in page and 'data-failure-kind="assertion"' in page
