"""Drawing cases for the kernel under test: the strategies, restricted to what its
preconditions allow. Properties draw inside the test (`st.data()`) because the kernel,
and so its preconditions, is only known once pytest has parametrised the test."""

from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

from conformance.harness import KernelUnderTest
from strategies.cases import Case, cases


def draw_case(data: st.DataObject, kernel: KernelUnderTest, label: str = "case",
              **kw) -> Case:
    """One case meeting the kernel's preconditions (keyword arguments go to `cases`)."""
    return data.draw(cases(kernel.pre, **kw), label=label)


def require(condition: bool) -> None:
    """Discard an example that cannot exercise the property (counted by Hypothesis)."""
    assume(condition)
