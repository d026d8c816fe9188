"""Failures that travel: `--example-db-from=DIR` replays the examples another machine saved
(a nightly shard's example-database artifact, downloaded with `gh run download`) before
generating new ones, by setting Hypothesis' database to

    MultiplexedDatabase(<the local database>, ReadOnlyDatabase(<each database under DIR>))

Reads come from all of them, writes (new failures, shrinks) go to the local one only, so
the downloaded artifact is never changed. DIR may be one database (Hypothesis'
`.hypothesis/examples`), a folder holding `.hypothesis/` or `examples/`, or a folder of
several downloaded shards' artifacts: every `examples` folder under it is read.

Hypothesis uses no database under a forced `--hypothesis-seed` (nor in a derandomized
profile: smoke, ci, kill), so replaying takes a random one (dev, nightly).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    InMemoryExampleDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)


def databases_under(path: str) -> list[Path]:
    """The example databases in a downloaded artifact (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise pytest.UsageError(f"--example-db-from: expected a folder (a downloaded example "
                                f"database), got {path!r}, which is not one")
    if root.name == "examples":
        return [root]
    found = sorted(p for p in root.rglob("examples") if p.is_dir())
    return found or [root]


def multiplexed(local, path: str) -> MultiplexedDatabase:
    """The local database, writable, beside every database under `path`, read-only.

    A profile that keeps no database (`database=None`, e.g. a user's own) still replays what
    was asked for; what it would have saved goes to memory and is dropped with the process."""
    if local is None:
        local = InMemoryExampleDatabase()
    return MultiplexedDatabase(local, *(ReadOnlyDatabase(DirectoryBasedExampleDatabase(str(p)))
                                        for p in databases_under(path)))


def pytest_configure(config):
    path = config.getoption("example_db_from")
    if path:
        databases_under(path)  # a bad path fails before the run starts
        seed = config.getoption("hypothesis_seed", None)
        if seed is not None:  # Hypothesis reads and writes no database under a forced seed
            raise pytest.UsageError(f"--example-db-from: expected no --hypothesis-seed beside it "
                                    f"(a forced seed turns Hypothesis' example database off), "
                                    f"got --hypothesis-seed={seed}")


#: the loaded profile's own database, in words, as it was before it was multiplexed
_LOCAL = pytest.StashKey[str]()


def _local_words(local) -> str:
    return "local" if local is not None else "in memory (the profile keeps none)"


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    """After every pytest_configure (Hypothesis' own loads `--hypothesis-profile` there) and
    before the test modules are imported: the loaded profile, under its own name, gets the
    multiplexed database."""
    path = session.config.getoption("example_db_from")
    if not path:
        return
    name = settings.get_current_profile_name()
    profile = settings.get_profile(name)
    session.config.stash[_LOCAL] = _local_words(profile.database)
    settings.register_profile(name, settings(profile, database=multiplexed(profile.database, path)))
    settings.load_profile(name)


def pytest_report_header(config):
    path = config.getoption("example_db_from")
    if not path:
        return []
    # pytest prints the header after pytest_sessionstart has multiplexed the loaded profile
    local = config.stash.get(_LOCAL, None) or _local_words(settings.default.database)
    return [f"example database: {local}, plus read-only "
            f"{', '.join(map(str, databases_under(path)))}"]
