"""Replaying a counterexample: the `@reproduce_failure` blob Hypothesis prints with every
failure (profiles set `print_blob`), and the one-line command that replays it."""

from __future__ import annotations

import re
import shlex

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


def replay_command(nodeid: str, kernel: str | None, profile: str, blob: str | None) -> str:
    """A one-line command that replays a failure on any machine with the suite installed
    (with the example database, a plain rerun of the test also replays it first)."""
    parts = ["pytest", nodeid] + ([f"--kernel={kernel}"] if kernel else []) + [
        f"--hypothesis-profile={profile}", "-p", "no:xdist"]
    if blob:
        parts.append(f"--replay={blob}")
    return shlex.join(parts)
