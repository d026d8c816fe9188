"""The kill-rate summary, on hand-made run reports."""

from conformance.killrate import summarise, table


def result(kernel, prop, status, examples=10, first=None, seconds=1.0, size=None):
    r = {"kernel": kernel, "property": prop, "status": status, "examples": examples,
         "seconds": seconds, "first_failure_example": first, "first_failure_seconds":
         seconds / 2 if first else None, "replay": "pytest x" if status == "failed" else None}
    if size:
        r["counterexample"] = {"size": size}
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
    text = table(list(rows.values()))
    assert "killed 1 of 2 faulty kernels" in text and "B=1 S=2 tokens=2 live=3" in text


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
