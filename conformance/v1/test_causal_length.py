"""Property 2: never attend past the derived causal length. Every pool row that no live
entry addresses is poisoned (NaN, +-inf, +-3e38) and every ignored index entry is replaced
by garbage; the output must stay finite and equal to the clean call's reference."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call, example, expect_matches
from sparse_attn_conformance.conformance.v1.poison import poisoned


@given(data=st.data())
def test_unread_rows_and_ignored_entries_cannot_leak(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel):
        gen = torch.Generator().manual_seed(case.seed)
        dirty = poisoned(case.inputs, gen, entries=not kernel.pre.canonical_rows)
        out = call(kernel, dirty)
        # compared with the clean call's reference: poison must change nothing
        expect_matches(out, case.inputs, what="output with unread rows poisoned",
                       against="the clean call's reference")
