"""Running a suite property directly, in-process, under a named Hypothesis profile.

Hypothesis binds a test's settings when `@given` decorates it, that is when its module is
imported: loading a profile afterwards changes nothing for a property already imported (the
project's tests import them at collection, under the dev profile: random, 30 examples). So a
meta-test that wants the kill-rate run's derandomized verdict must re-wrap the property.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from hypothesis import Phase, given, settings
from hypothesis import strategies as st


def in_profile(prop, name: str, *, max_examples: int | None = None,
               shrink: bool = True) -> Callable[..., None]:
    """`prop` (a suite property, `@given(data=st.data())`) as a callable that runs its
    body under the profile `name`, with at most `max_examples` examples when given and
    without shrinking when `shrink` is false.

    The body is re-wrapped, not the property mutated (a settings object applied to a test
    stays on it, for every later caller in the process). Hypothesis seeds a derandomized
    run from the body's source, so the examples are those of a suite run under `name`.
    The profile is loaded while the property runs, for what reads the loaded profile's
    name (the per-example work budget, `plugin.profiles.budget`). A property that is not
    a Hypothesis test (an explicit example) runs as it is."""
    wrapped = prop
    if hasattr(prop, "hypothesis"):
        inner = prop.hypothesis.inner_test
        if "data" not in inspect.signature(inner).parameters:
            raise TypeError(f"in_profile: expected a property drawing from `data`, "
                            f"got {prop.__name__}{inspect.signature(inner)}")
        overrides = {}
        if max_examples is not None:
            overrides["max_examples"] = min(max_examples,
                                            settings.get_profile(name).max_examples)
        if not shrink:
            overrides["phases"] = [p for p in Phase if p is not Phase.shrink]
        wrapped = settings(settings.get_profile(name), **overrides)(given(data=st.data())(inner))

    def run(**fixtures) -> None:
        before = settings.get_current_profile_name()
        settings.load_profile(name)
        try:
            wrapped(**fixtures)
        finally:
            settings.load_profile(before)

    run.__name__ = prop.__name__
    return run
