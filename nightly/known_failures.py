"""Known failures: `--known-failures=FILE` (or `$SPARSE_ATTN_KNOWN_FAILURES`), a TOML file of
failures a kernel is known to have in a given version of the suite. A listed test runs as
`xfail(strict=True)`: while it fails the run stays green and the report says "expected
fail"; once it passes, pytest reports it as a failure (XPASS(strict)), so the entry gets
removed rather than forgotten. A malformed file is a usage error.

    [[failure]]
    kernel = "pypto"              # a kernel name, or a glob over names ("mutant-pypto-*")
    suite_version = "0.1.0"       # the sparse-attn-conformance version, or a glob ("0.1.*", "*")
    test = "test_matches_reference"   # a property (test function) or a whole node id
    reason = "fp16 accumulation past 2^15 live slots (#42)"
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass
from importlib import metadata

import pytest

from sparse_attn_conformance.plugin.selection import identity

ENV = "SPARSE_ATTN_KNOWN_FAILURES"
_STASH = pytest.StashKey[list]()
_KEYS = {"kernel", "suite_version", "test", "reason"}


@dataclass(frozen=True)
class KnownFailure:
    kernel: str
    suite_version: str
    test: str
    reason: str

    def matches(self, who: dict, version: str) -> bool:
        return (fnmatch.fnmatchcase(who["kernel"] or "", self.kernel)
                and fnmatch.fnmatchcase(version, self.suite_version)
                and self.test in (who["property"], who["nodeid"]))


def suite_version() -> str:
    try:
        return metadata.version("sparse-attn-conformance")
    except metadata.PackageNotFoundError:
        return "unknown"


def load(path: str) -> list[KnownFailure]:
    """The entries of a known-failures file; anything malformed is a usage error."""
    def bad(what: str) -> pytest.UsageError:
        return pytest.UsageError(f"--known-failures: expected {what}, got {path}: {problem}")

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        problem = exc.strerror
        raise bad("a readable TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        problem = str(exc)
        raise bad("a TOML file") from exc
    entries = data.get("failure", [])
    problem = f"top-level keys {sorted(data)}"
    if set(data) - {"failure"} or not isinstance(entries, list):
        raise bad("only [[failure]] tables")
    out = []
    for i, entry in enumerate(entries, 1):
        problem = f"failure #{i} has keys {sorted(entry)}"
        if set(entry) != _KEYS:
            raise bad(f"each [[failure]] to have exactly the keys {sorted(_KEYS)}")
        problem = f"failure #{i} = {entry}"
        if not all(isinstance(entry[k], str) and entry[k].strip() for k in _KEYS):
            raise bad("non-empty strings")
        out.append(KnownFailure(**{k: entry[k] for k in _KEYS}))
    return out


def _path(config) -> str | None:
    return config.getoption("known_failures") or os.environ.get(ENV) or None


def pytest_configure(config):
    path = _path(config)
    config.stash[_STASH] = load(path) if path else []


def pytest_collection_modifyitems(config, items):
    known = config.stash.get(_STASH, [])
    if not known:
        return
    version = suite_version()
    for item in items:
        who = identity(item)
        hit = next((k for k in known if k.matches(who, version)), None)
        if hit is not None:
            item.add_marker(pytest.mark.xfail(reason=f"known failure: {hit.reason}", strict=True))


def pytest_report_header(config):
    known = config.stash.get(_STASH, [])
    return [f"known failures: {len(known)} listed in {_path(config)} "
            f"(suite {suite_version()}; strict)"] if known else []
