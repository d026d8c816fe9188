"""Drawing cases for the kernel under test: the strategies, restricted to what its
preconditions allow, within the profile's work budget. Properties draw inside the test
(`st.data()`) because the kernel, and so its preconditions, is only known once pytest has
parametrised the test."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.errors import HypothesisException, StopTest

from conformance import recorder
from kernels.interface import KernelUnderTest
from plugin import profiles
from strategies import cases as v1_cases


def cases_of(kernel: KernelUnderTest):
    """The composed strategy of the kernel's calling convention."""
    if kernel.convention == "v2":
        from strategies.v2 import cases as v2_cases

        return v2_cases.cases
    return v1_cases.cases


def draw_case(data: st.DataObject, kernel: KernelUnderTest, label: str = "case",
              **kw):
    """One case of the kernel's calling convention meeting its preconditions (keyword
    arguments go to that convention's `cases`: `strategies.cases.cases` for v1,
    `strategies.v2.cases.cases` for v2).
    A draw that Hypothesis discards (its data ran out, or a strategy rejected it) is
    counted in the report's `rejected`."""
    try:
        return data.draw(cases_of(kernel)(kernel.pre, budget=profiles.budget(), **kw), label=label)
    except (HypothesisException, StopTest):
        recorder.note_rejected()
        raise

