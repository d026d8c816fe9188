"""Shards: every test in exactly one shard, balanced by stored durations, the same split
on every machine; the shard and seed in the report, and the merged page lists them."""

import json

import pytest

from sparse_attn_conformance.nightly import sharding
from sparse_attn_conformance.reports import html
from tests.pool_helpers import SUITE, run_pytest


def collected(*args):
    res = run_pytest(str(SUITE), "--kernel=reference", "-p", "no:xdist", "--co", "-q", *args)
    assert res.returncode == 0, res.stdout[-2000:]
    return [ln for ln in res.stdout.splitlines() if "::" in ln]


def test_the_shards_union_is_the_whole_suite_no_test_twice(tmp_path):
    durations = tmp_path / "durations.json"
    whole = collected()
    # one slow test fills a shard of its own, the others (one unknown: the median) share the rest
    durations.write_text(json.dumps({n: 100.0 if n == whole[-1] else 1.0 for n in whole[1:]}))
    shards = [collected(f"--shard={i}/2", f"--durations-file={durations}") for i in (1, 2)]
    assert sorted(sum(shards, [])) == sorted(whole)
    assert len(set(sum(shards, []))) == len(whole)
    assert shards[0] == [whole[-1]]


def test_greedy_balance_and_median_for_unknown_tests():
    parts = sharding.assign(["a", "b", "c", "d"], 2, {"a": 5.0, "b": 3.0, "c": 2.0})
    assert parts == [["a", "c"], ["b", "d"]]  # d counts as the median, 3: a+c = b+d
    assert sharding.assign(["x", "y", "z"], 2, {}) == [["x", "z"], ["y"]]
    assert sharding.assign(["x"], 3, {}) == [["x"], [], []]


@pytest.mark.parametrize("spec", ["3/2", "0/2", "1", "a/b", "1/0", ""])
def test_bad_shard_is_a_usage_error(spec):
    with pytest.raises(pytest.UsageError, match=r"--shard: expected I/N with 1 <= I <= N \(1-based\), got"):
        sharding.parse_shard(spec)


def test_a_shard_records_itself_its_seed_and_durations_and_pages_merge(tmp_path):
    durations = tmp_path / "d.json"
    runs = []
    for i in (1, 2):
        res = run_pytest(str(SUITE / "v1" / "test_regression_fixture.py"), str(SUITE / "test_determinism.py"),
                         "--kernel=reference", "-p", "no:xdist", "--hypothesis-profile=smoke",
                         f"--shard={i}/2", f"--hypothesis-seed={10 + i}", "--save-durations",
                         f"--durations-file={tmp_path / f'd{i}.json'}",
                         f"--report-dir={tmp_path / f'r{i}'}")
        assert res.returncode == 0, res.stdout[-2000:]
        assert f"shard {i}/2 (1-based)" in res.stdout
        [path] = (tmp_path / f"r{i}").glob("conformance-*.json")
        runs.append(json.loads(path.read_text()))
    assert [(r["shard"], r["seed"]) for r in runs] == [("1/2", "11"), ("2/2", "12")]
    ran = [r["nodeid"] for run in runs for r in run["results"]]
    assert len(ran) == len(set(ran)) == 2  # the fixture and test_two_calls_give_identical_bits
    assert sharding.main(["merge", str(durations), str(tmp_path / "d1.json"),
                          str(tmp_path / "d2.json")]) == 0
    assert sorted(json.loads(durations.read_text())) == sorted(ran)
    page = html.render(runs)
    assert "shards and seeds: 1/2 (seed 11), 2/2 (seed 12)" in page
