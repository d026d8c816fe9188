"""Failures that travel: a failure saved in one machine's example database is replayed
first on another that points `--example-db-from` at a copy, which stays unchanged."""

import pytest

from conformance import example_db
from tests.pool_helpers import SUITE, run_pytest

TEST = str(SUITE / "test_sink_and_empty.py") + "::test_zero_query_closed_form"


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_nightly_failure_replays_from_the_downloaded_database(tmp_path):
    night, laptop = tmp_path / "night", tmp_path / "laptop"
    night.mkdir()
    laptop.mkdir()
    args = ("--kernel=mutant-sink-dropped", "-p", "no:xdist", "--hypothesis-profile=dev")
    res = run_pytest(TEST, *args, cwd=night)
    assert res.returncode == 1, res.stdout[-2000:]
    # as `gh run download` lays out one shard's artifact
    artifact = tmp_path / "download" / "example-db-1"
    (night / ".hypothesis").rename(artifact.parent.mkdir() or artifact)
    before = files(artifact)
    res = run_pytest(TEST, *args, f"--example-db-from={artifact.parent}",
                     "--hypothesis-show-statistics", cwd=laptop)
    assert res.returncode == 1, res.stdout[-2000:]
    assert "example database: local, plus read-only" in res.stdout
    reuse = res.stdout.split("during reuse phase", 1)[1].split("during", 1)[0]
    assert "Found 1 distinct error in this phase" in reuse
    assert files(artifact) == before  # read-only
    assert files(laptop / ".hypothesis" / "examples")  # the local database got it too


def test_every_examples_folder_under_the_download_is_read(tmp_path):
    for shard in ("example-db-1", "example-db-2"):
        (tmp_path / shard / "examples").mkdir(parents=True)
    assert [p.parent.name for p in example_db.databases_under(str(tmp_path))] == [
        "example-db-1", "example-db-2"]
    with pytest.raises(pytest.UsageError, match="--example-db-from: expected a folder"):
        example_db.databases_under(str(tmp_path / "nonesuch"))


def test_a_forced_seed_beside_the_database_is_a_usage_error(tmp_path):
    res = run_pytest(TEST, "--kernel=reference", f"--example-db-from={tmp_path}",
                     "--hypothesis-seed=3", "--co", "-p", "no:xdist")
    assert res.returncode == 4
    assert "--example-db-from: expected no --hypothesis-seed beside it" in res.stdout + res.stderr
