"""The plugin's wrapper of the test Hypothesis runs (`plugin.hypothesis_hooks.light_failures`):
a failing example's locals do not outlive it, and the derandomized examples stay the same."""

from __future__ import annotations

import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.internal.reflection import function_digest

from sparse_attn_conformance.plugin.hypothesis_hooks import light_failures


class Big:
    """Stands for an example's tensors."""


def failing_property(alive: list[int]):
    refs: list[weakref.ref] = []

    @settings(max_examples=30, derandomize=True, database=None, deadline=None)
    @given(st.integers(0, 1000))
    def prop(x):
        big = Big()
        refs.append(weakref.ref(big))
        alive.append(sum(r() is not None for r in refs))
        assert x < 3

    return prop


@pytest.mark.parametrize("light", [False, True])
def test_failing_examples_keep_no_locals(light):
    """Hypothesis keeps failing examples' exceptions while it shrinks; without the wrapper
    their frames keep every failing example's locals alive, with it only the running one."""
    alive: list[int] = []
    prop = failing_property(alive)
    if light:
        light_failures(prop)
        light_failures(prop)  # once is enough: a second call wraps nothing more
    with pytest.raises(AssertionError) as info:
        prop()
    assert "assert" in str(info.value)  # the failure's message stays
    if light:
        assert max(alive) == 1, alive
    else:
        assert max(alive) > 2, alive  # the fault the wrapper removes is there to remove


def test_wrapping_keeps_the_digest_that_derandomizes():
    prop = failing_property([])
    before = function_digest(prop.hypothesis.inner_test)
    light_failures(prop)
    assert prop.hypothesis.inner_test.__wrapped__ is not None
    assert function_digest(prop.hypothesis.inner_test) == before
