"""Failures that travel: a failure saved in one machine's example database is replayed
first on another that points `--example-db-from` at a copy, which stays unchanged."""

import os
import subprocess
import sys

import pytest

from sparse_attn_conformance.nightly import example_db
from tests.pool_helpers import SUITE, run_pytest

TEST = str(SUITE / "test_sink_and_empty.py") + "::test_zero_query_closed_form"


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def looks_like_ci(ci: bool) -> dict:
    """This process's environment, with or without the variable CI services set (Hypothesis
    loads its own "ci" profile, which keeps no database, when it sees one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    return env | ({"CI": "true", "GITHUB_ACTIONS": "true"} if ci else {})


@pytest.mark.parametrize("ci", [True, False], ids=["in-ci", "not-ci"])
def test_a_nightly_failure_replays_from_the_downloaded_database(tmp_path, ci):
    night, laptop = tmp_path / "night", tmp_path / "laptop"
    night.mkdir()
    laptop.mkdir()
    args = ("--kernel=mutant-sink-dropped", "-p", "no:xdist", "--hypothesis-profile=dev")
    # the nightly runs in CI (GitHub Actions sets CI), the replay on a developer's machine
    res = run_pytest(TEST, *args, cwd=night, env=looks_like_ci(ci))
    assert res.returncode == 1, res.stdout[-2000:]
    # as `gh run download` lays out one shard's artifact
    artifact = tmp_path / "download" / "example-db-1"
    (night / ".hypothesis").rename(artifact.parent.mkdir() or artifact)
    before = files(artifact)
    res = run_pytest(TEST, *args, f"--example-db-from={artifact.parent}",
                     "--hypothesis-show-statistics", cwd=laptop, env=looks_like_ci(False))
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


PROFILES = """
from hypothesis import settings
import plugin.profiles as p
print({n: repr(settings.get_profile(n)) for n in p.PROFILES})
"""


def test_the_suite_profiles_do_not_depend_on_whether_the_environment_looks_like_ci():
    def profiles(ci):
        return subprocess.run([sys.executable, "-c", PROFILES], env=looks_like_ci(ci),
                              capture_output=True, text=True, check=True).stdout
    assert profiles(True) == profiles(False)
    # the random profiles keep a database (Hypothesis keeps none in a derandomized one)
    assert "'dev': \"settings(backend='hypothesis', database=DirectoryBased" in profiles(True)


def test_a_profile_without_a_database_still_replays(tmp_path):
    (tmp_path / "examples").mkdir()
    db = example_db.multiplexed(None, str(tmp_path))
    db.save(b"k", b"v")  # goes to memory, not to the read-only download
    assert list(db.fetch(b"k")) == [b"v"]
    assert not any((tmp_path / "examples").iterdir())
    # and the run's header says so
    (tmp_path / "nodb_profile.py").write_text(
        "from hypothesis import settings\nsettings.register_profile('nodb', database=None, deadline=None)\n")
    res = run_pytest(TEST, "--kernel=reference", "-p", "no:xdist", "-p", "nodb_profile",
                     "--hypothesis-profile=nodb", f"--example-db-from={tmp_path}",
                     extra_path=tmp_path, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "example database: in memory (the profile keeps none), plus read-only" in res.stdout
