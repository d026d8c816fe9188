"""The places the plugin sets what a Hypothesis decorator (or, for the shrink budget,
Hypothesis' documented monkeypatchable `engine.MAX_SHRINKING_SECONDS`) would have set for a
test, because the choice is only known at run time (from the command line, or from the
kernel under test). Both are exercised by tests/test_plugin.py and tests/test_reports.py,
so a Hypothesis release that moves them fails loudly."""

from __future__ import annotations

import math
from contextlib import contextmanager

from hypothesis import settings
from hypothesis.internal.conjecture import engine

_SETTINGS = "_hypothesis_internal_use_settings"      # what @settings(...) sets
_REPRODUCE = "_hypothesis_internal_use_reproduce_failure"  # what @reproduce_failure sets


def replay(test_fn, version: str, blob: bytes) -> None:
    """As if the test were decorated with `@reproduce_failure(version, blob)`."""
    setattr(test_fn, _REPRODUCE, (version, blob))


@contextmanager
def scaled_examples(test_fn, fraction: float, minimum: int = 3):
    """Run `test_fn` with `fraction` of its profile's `max_examples` (at least `minimum`)."""
    original = getattr(test_fn, _SETTINGS, None)
    if original is None or fraction >= 1:
        yield None
        return
    n = max(minimum, math.ceil(original.max_examples * fraction))
    setattr(test_fn, _SETTINGS, settings(original, max_examples=n))
    try:
        yield n
    finally:
        setattr(test_fn, _SETTINGS, original)


def shrink_limit() -> float:
    """Hypothesis' current bound on the seconds spent shrinking one failure."""
    return float(engine.MAX_SHRINKING_SECONDS)


@contextmanager
def shrink_budget(seconds: float | None):
    """Run with Hypothesis shrinking one failure for at most `seconds` (None: its own
    bound, 300 s)."""
    if seconds is None:
        yield shrink_limit()
        return
    original = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = seconds
    try:
        yield float(seconds)
    finally:
        engine.MAX_SHRINKING_SECONDS = original
