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
from strategies.cases import Case, cases


def draw_case(data: st.DataObject, kernel: KernelUnderTest, label: str = "case",
              **kw) -> Case:
    """One case meeting the kernel's preconditions (keyword arguments go to `cases`).
    A draw that Hypothesis discards (its data ran out, or a strategy rejected it) is
    counted in the report's `rejected`."""
    try:
        return data.draw(cases(kernel.pre, budget=profiles.budget(), **kw), label=label)
    except (HypothesisException, StopTest):
        recorder.note_rejected()
        raise

