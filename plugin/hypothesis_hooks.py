"""The places the plugin sets what a Hypothesis decorator (or, for the shrink budget,
Hypothesis' documented monkeypatchable `engine.MAX_SHRINKING_SECONDS`) would have set for a
test, because the choice is only known at run time (from the command line, or from the
kernel under test). Both are exercised by tests/test_plugin.py and tests/test_reports.py,
so a Hypothesis release that moves them fails loudly. And one wrapper of the test Hypothesis
runs (its reassignable `inner_test`), which lightens each failure it keeps."""

from __future__ import annotations

import functools
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


def _clear(exc: BaseException | None, seen: set) -> None:
    """Clear the locals of every finished frame `exc`, its cause, context and group
    members passed through (`frame.clear`; a running frame is skipped)."""
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            try:
                tb.tb_frame.clear()
            except RuntimeError:  # a running frame (the wrapper's own)
                pass
            else:
                # a frame whose locals were read (pytest reads them) keeps a dict of them
                # that `clear` leaves: reading it again drops the cleared names
                tb.tb_frame.f_locals  # noqa: B018
            tb = tb.tb_next
        for sub in getattr(exc, "exceptions", ()):
            _clear(sub, seen)
        _clear(exc.__cause__, seen)
        exc = exc.__context__


def light_failures(test_fn) -> None:
    """Make Hypothesis' test `test_fn` drop the locals of its failures' frames.

    Hypothesis keeps each failing example's exception while it shrinks (in its cache of
    results, thousands), and an exception keeps its traceback's frames, whose locals hold
    the example's tensors: a property on calls of 65536 heads of 576 dims grew one worker
    to 7 GB and two to the 24 GB machine's limit. The failure's message, notes and lines
    stay; only the locals go, once the test function has returned. The wrapper keeps the
    test's name, source and signature (`functools.wraps`), so a derandomized run draws the
    same examples."""
    inner = test_fn.hypothesis.inner_test
    if getattr(inner, "_light_failures", False):
        return

    @functools.wraps(inner)
    def run(*args, **kwargs):
        try:
            return inner(*args, **kwargs)
        except BaseException as exc:
            _clear(exc, set())
            raise

    run._light_failures = True
    test_fn.hypothesis.inner_test = run
