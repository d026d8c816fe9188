"""The plugin's replay: the `@reproduce_failure` blob Hypothesis prints with every failure
(profiles set `print_blob`), the one-line command that replays it (a failed test's "replay
this failure" section, which the report keeps), and `--replay=VERSION:BLOB`, which runs the
one selected test on exactly that counterexample.

The hooks are registered by `plugin.entry` only when the suite was asked for.
"""

from __future__ import annotations

import base64
import re
import shlex

import hypothesis
import hypothesis.errors
import pytest

from sparse_attn_conformance.conformance.recorder import REPLAY_SECTION
from sparse_attn_conformance.plugin import hypothesis_hooks
from sparse_attn_conformance.plugin.selection import identity

BLOB_RE = re.compile(r"@reproduce_failure\('(?P<version>[^']+)', b'(?P<blob>[^']+)'\)")


def find_blob(text: str) -> str | None:
    """`VERSION:BLOB` from the `@reproduce_failure(...)` line in a failure's text, if any."""
    m = BLOB_RE.search(text or "")
    return f"{m['version']}:{m['blob']}" if m else None


def parse_blob(arg: str) -> tuple[str | None, bytes]:
    """`(hypothesis version or None, blob)` from `VERSION:BLOB`, a whole
    `@reproduce_failure(...)` line, or a bare blob."""
    m = BLOB_RE.search(arg)
    if m:
        return m["version"], m["blob"].encode()
    version, sep, blob = arg.rpartition(":")
    return (version if sep else None), blob.encode()


def given_blob(config) -> str | None:
    """`VERSION:BLOB` of this run's own `--replay`, if any: Hypothesis prints no blob for a
    failure it reproduced from one, so a replayed failure's replay line carries it from here."""
    arg = config.getoption("replay")
    if not arg:
        return None
    version, data = parse_blob(arg)
    return f"{version or hypothesis.__version__}:{data.decode()}"


def selector(item) -> list[str]:
    """What selects `item` on a command line run where this one ran: its node id for a test
    file under the run's rootdir (the suite's checkout), else (the suite installed, run with
    `--pyargs` from a user's project) its module and name, which pytest resolves from any
    directory."""
    try:
        item.path.relative_to(item.config.rootpath)
        return [f"{item.parent.nodeid}::{item.name}"]  # without xdist's `@group`
    except ValueError:
        return ["--pyargs", f"{item.module.__name__}::{item.name}"]


def replay_command(nodeid: str | list[str], kernel: str | None, profile: str,
                   blob: str | None) -> str:
    """A one-line command that replays a failure on any machine with the suite installed
    (with the example database, a plain rerun of the test also replays it first); `nodeid`
    is a node id or what `selector` gives."""
    parts = ["pytest", *([nodeid] if isinstance(nodeid, str) else nodeid)] + (
        [f"--kernel={kernel}"] if kernel else []) + [
        f"--hypothesis-profile={profile}", "-p", "no:xdist"]
    if blob:
        parts.append(f"--replay={blob}")
    return shlex.join(parts)


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: count the tests that will run
def pytest_collection_modifyitems(config, items):
    blob = config.getoption("replay")
    if not blob:
        return
    version, data = parse_blob(blob)
    if len(items) != 1:
        raise pytest.UsageError(f"--replay: expected exactly one selected test, got {len(items)}")
    try:
        base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise pytest.UsageError(f"--replay: expected a base64 blob, got {blob!r}") from exc
    hypothesis_hooks.replay(items[0].obj, version or hypothesis.__version__, data)


#: the `user_properties` key marking a replayed test whose failure did not reproduce
NOT_REPRODUCED_KEY = "conformance_replay_not_reproduced"


def _not_reproduced(item, call) -> bool:
    """Whether `call` is a `--replay` run whose example passed (Hypothesis raises
    `DidNotReproduce` when a `@reproduce_failure` example passes)."""
    return (call.when == "call" and call.excinfo is not None
            and bool(item.config.getoption("replay"))
            and call.excinfo.errisinstance(hypothesis.errors.DidNotReproduce))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test (or an expected failure, a contract finding) gets its replay command.
    A replay whose example passes now is not a failure: the test passes, marked, and the
    run's summary says the failure no longer reproduces (no new replay line)."""
    report = yield
    if _not_reproduced(item, call):
        report.outcome, report.longrepr = "passed", None
        report.user_properties = [*report.user_properties, (NOT_REPRODUCED_KEY, (
            f"{report.nodeid}: the replayed failure no longer reproduces: the example "
            f"passes on this kernel now"))]
        return report
    if call.when == "call" and (report.failed or hasattr(report, "wasxfail")):
        who = identity(item)
        report.sections.append((REPLAY_SECTION, replay_command(
            selector(item), who["kernel"], hypothesis.settings.get_current_profile_name(),
            find_blob(str(report.longrepr)) or given_blob(item.config))))
    return report


_not_reproduced_lines: list[str] = []


def pytest_sessionstart(session):
    _not_reproduced_lines.clear()


def pytest_runtest_logreport(report):
    for key, text in getattr(report, "user_properties", ()):
        if key == NOT_REPRODUCED_KEY:
            _not_reproduced_lines.append(text)


def pytest_terminal_summary(terminalreporter):
    if _not_reproduced_lines:
        terminalreporter.section("replay: did not reproduce")
        for line in _not_reproduced_lines:
            terminalreporter.write_line(line)
