"""The kill-rate summary, on hand-made run reports."""

import copy
import json

from sparse_attn_conformance.nightly import killrate
from sparse_attn_conformance.nightly.killrate import summarise, table
from sparse_attn_conformance.reports.model import run_stem


def result(kernel, prop, status, examples=10, first=None, seconds=1.0, size=None,
           kind="assertion"):
    r = {"kernel": kernel, "property": prop, "status": status, "examples": examples,
         "seconds": seconds, "first_failure_example": first, "first_failure_seconds":
         seconds / 2 if first else None, "replay": "pytest x" if status == "failed" else None}
    if status == "failed":
        r["failure_kind"] = kind
    if size:
        r["counterexample"] = {"size": size, "failure_kind": kind}
    return r


SIZE = {"B": 1, "S": 2, "tokens": 2, "live_entries": 3}
RUN = {
    "kernels": {"reference": {"faulty": False}, "mutant-a": {"faulty": True},
                "mutant-b": {"faulty": True}},
    "results": [
        result("reference", "p1", "passed"), result("reference", "p2", "passed"),
        result("mutant-a", "p1", "passed", examples=30, seconds=2.0),
        result("mutant-a", "p2", "failed", first=4, seconds=1.0, size=SIZE),
        result("mutant-b", "p1", "passed"), result("mutant-b", "p2", "skipped"),
    ],
}


def test_first_kill_counts_the_properties_passed_before():
    rows = {r["kernel"]: r for r in summarise(dict(RUN, first_kill=True))}
    a = rows["mutant-a"]
    assert (a["verdict"], a["caught_by"], a["examples_to_kill"]) == ("killed", "p2", 34)
    assert a["seconds_to_kill"] == 2.5 and a["shrunk_size"] == SIZE
    assert rows["mutant-b"]["verdict"] == "SURVIVED"
    assert rows["reference"]["verdict"] == "passed"
    assert a["caught_how"] == "assertion" and rows["mutant-b"]["caught_how"] is None
    text = table(list(rows.values()))
    assert "killed 1 of 2 faulty kernels\n" in text and "B=1 S=2 tokens=2 live=3" in text
    [line] = [t for t in text.splitlines() if t.startswith("mutant-a ")]
    assert line.split()[:4] == ["mutant-a", "killed", "p2", "assertion"]
    assert "how" in text.splitlines()[0]


def test_full_matrix_picks_the_fastest_property():
    run = dict(RUN, first_kill=False)
    run["results"] = RUN["results"] + [result("mutant-b", "p3", "failed", first=2, size=SIZE),
                                       result("mutant-b", "p4", "failed", first=9, size=SIZE)]
    rows = {r["kernel"]: r for r in summarise(run)}
    b = rows["mutant-b"]
    assert (b["caught_by"], b["examples_to_kill"], b["failing_properties"]) == ("p3", 2, ["p3", "p4"])


def test_a_failing_correct_kernel_is_reported():
    run = dict(RUN, first_kill=True)
    run["results"] = [result("reference", "p1", "failed", first=1, size=SIZE)]
    [row] = [r for r in summarise(run) if r["kernel"] == "reference"]
    assert row["verdict"] == "FAILED"


def test_a_kernel_caught_only_by_kernel_errors_is_caught_and_listed_as_such():
    run = dict(RUN, first_kill=True)
    run["results"] = RUN["results"][:4] + [
        result("mutant-b", "p1", "failed", first=1, size=SIZE, kind="kernel-error")]
    rows = {r["kernel"]: r for r in summarise(run)}
    b = rows["mutant-b"]
    assert (b["verdict"], b["caught_by"], b["caught_how"]) == ("killed", "p1", "kernel-error")
    text = table(list(rows.values()))
    [line] = [t for t in text.splitlines() if t.startswith("mutant-b ")]
    assert line.split()[:4] == ["mutant-b", "killed", "p1", "kernel-error"]
    assert "killed 2 of 2 faulty kernels (1 only by a kernel error, no property's check: " \
           "mutant-b)" in text


def test_full_matrix_says_assertion_when_any_property_check_caught_it():
    run = dict(RUN, first_kill=False)
    run["results"] = RUN["results"] + [
        result("mutant-b", "p3", "failed", first=2, size=SIZE, kind="kernel-error"),
        result("mutant-b", "p4", "failed", first=9, size=SIZE, kind="assertion")]
    b = {r["kernel"]: r for r in summarise(run)}["mutant-b"]
    assert (b["caught_by"], b["caught_how"]) == ("p3", "assertion")
    assert b["failure_kinds"] == {"p3": "kernel-error", "p4": "assertion"}
    run["results"][-1] = result("mutant-b", "p4", "failed", first=9, kind="kernel-error")
    b = {r["kernel"]: r for r in summarise(run)}["mutant-b"]
    assert b["caught_how"] == "kernel-error"


def test_an_older_report_without_failure_kinds():
    run = dict(RUN, first_kill=True)
    run["results"] = copy.deepcopy(RUN["results"])
    run["results"][3].pop("failure_kind")
    run["results"][3]["counterexample"].pop("failure_kind")
    rows = summarise(run)
    assert [r["caught_how"] for r in rows if r["kernel"] == "mutant-a"] == [None]
    assert "mutant-a" in table(rows) and " ? " in table(rows)


def test_out_dir_keeps_other_files(tmp_path, monkeypatch):
    """--out DIR replaces only what the command writes (killrate.json and its run's report),
    and summarises the report of this run, not another conformance-*.json lying there."""
    kept = {"results.json": "{}", "conformance-pypto-dev.json": "{}", "notes.txt": "x"}
    for name, text in kept.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "killrate.json").write_text("stale")
    stem = run_stem({"kernel_spec": "reference,mutant-a", "profile": "kill"})
    (tmp_path / f"{stem}.html").write_text("stale")
    calls = []

    def fake_suite(kernels, profile, workers, out, extra, full=False):
        calls.append((kernels, profile, out))
        assert not (tmp_path / "killrate.json").exists()  # no stale summary while it runs
        assert not (tmp_path / f"{stem}.html").exists()
        run = {"kernels": {"reference": {"faulty": False}, "mutant-a": {"faulty": True}},
               "results": RUN["results"][:4]}
        (tmp_path / f"{stem}.json").write_text(json.dumps(run))
        return 1

    monkeypatch.setattr(killrate, "run_suite", fake_suite)
    monkeypatch.setattr(killrate.registry, "expand", lambda spec: spec.split(","))
    code = killrate.main(["--kernels", "reference,mutant-a", "--out", str(tmp_path), "-n", "0"])
    assert code == 0 and calls == [("reference,mutant-a", "kill", str(tmp_path))]
    for name, text in kept.items():
        assert (tmp_path / name).read_text() == text
    rows = json.loads((tmp_path / "killrate.json").read_text())["rows"]
    assert [(r["kernel"], r["verdict"], r["caught_how"]) for r in rows] == [
        ("reference", "passed", None), ("mutant-a", "killed", "assertion")]


def test_out_dir_without_a_report_is_an_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "conformance-other-kill.json").write_text("{}")
    monkeypatch.setattr(killrate, "run_suite", lambda *a, **k: 4)
    monkeypatch.setattr(killrate.registry, "expand", lambda spec: spec.split(","))
    assert killrate.main(["--kernels", "reference", "--out", str(tmp_path)]) == 2
    assert "pytest wrote no report" in capsys.readouterr().err
    assert (tmp_path / "conformance-other-kill.json").exists()


def test_diagnosis_column_names_the_best_explaining_hypothesis():
    run = copy.deepcopy(dict(RUN, first_kill=True))
    failed = next(r for r in run["results"] if r["status"] == "failed")
    failed["counterexample"]["diagnosis"] = {"failing_rows": 2, "hypotheses": [
        {"hypothesis": "sink-dropped", "explains": True},
        {"hypothesis": "scale", "explains": True}]}
    rows = {r["kernel"]: r for r in summarise(run)}
    assert rows["mutant-a"]["diagnosis"] == "sink-dropped"
    assert rows["mutant-b"]["diagnosis"] is None
    text = table(list(rows.values()))
    assert "diagnosis" in text.splitlines()[0]
    [line] = [t for t in text.splitlines() if t.startswith("mutant-a ")]
    assert "sink-dropped" in line.split()
    assert "explains 1 of the 1 killed kernels whose shrunk failure has one" in text
    failed["counterexample"]["diagnosis"]["hypotheses"] = [
        {"hypothesis": "scale", "explains": False}]
    assert summarise(run)[1]["diagnosis"] == "unexplained"
    failed["counterexample"]["diagnosis"] = {"failing_rows": 0, "hypotheses": []}
    assert summarise(run)[1]["diagnosis"] is None


def test_diagnosis_column_checks_the_declared_bug_class():
    run = copy.deepcopy(dict(RUN, first_kill=True))
    run["kernels"]["mutant-a"]["bug_class"] = "sink-dropped"
    failed = next(r for r in run["results"] if r["status"] == "failed")
    failed["counterexample"]["diagnosis"] = {"failing_rows": 1, "hypotheses": [
        {"hypothesis": "scale", "explains": True, "rank": 1},
        {"hypothesis": "sink-dropped", "explains": True, "rank": 1},
        {"hypothesis": "lane-dropped", "explains": True, "rank": 2}]}
    text = table(summarise(run))
    [line] = [t for t in text.splitlines() if t.startswith("mutant-a ")]
    assert "sink-dropped+1 =" in line  # tied at the best rank with one other
    assert "names the declared bug class of 1 of the 1 killed kernels that declare one" in text
    failed["counterexample"]["diagnosis"]["hypotheses"] = [
        {"hypothesis": "sink-dropped", "explains": True}]  # an older report: no ranks
    assert "sink-dropped =" in table(summarise(run))
    failed["counterexample"]["diagnosis"]["hypotheses"][0]["hypothesis"] = "scale"
    text = table(summarise(run))
    assert "scale !=" in text and "of 0 of the 1 killed kernels that declare one (not: " \
        "mutant-a)" in text
