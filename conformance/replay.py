"""Replaying a counterexample: the `@reproduce_failure` blob Hypothesis prints with every
failure (profiles set `print_blob`), and the one-line command that replays it."""

from __future__ import annotations

import re
import shlex

BLOB_RE = re.compile(r"@reproduce_failure\('(?P<version>[^']+)', b'(?P<blob>[^']+)'\)")


def find_blob(text: str) -> str | None:
    """The `@reproduce_failure(...)` line in a failure's text, if any."""
    m = BLOB_RE.search(text or "")
    return m.group(0) if m else None


def parse_blob(arg: str) -> tuple[str | None, bytes]:
    """`(hypothesis version or None, blob)` from a whole decorator line or a bare blob."""
    m = BLOB_RE.search(arg)
    return (m["version"], m["blob"].encode()) if m else (None, arg.encode())


def replay_command(nodeid: str, kernel: str, profile: str, blob: str | None) -> str:
    """A one-line command that replays a failure on any machine with the suite installed
    (with the example database, a plain rerun of the test also replays it first)."""
    parts = ["pytest", nodeid, f"--kernel={kernel}", f"--hypothesis-profile={profile}",
             "-p", "no:xdist"]
    if blob:
        parts.append(f"--replay={blob}")
    return shlex.join(parts)
