"""v2 property: never attend past the compressed cut, never read an ignored lane. Every pool
row that no live lane addresses is poisoned (NaN, +-inf, +-3e38), and every ignored lane is
rewritten: negative window lanes to other negatives, ignored compressed ids to the cut
bound `floor((pos + 1) / r)` itself, the bound + 1 or a negative, columns `>= IDX_TOPK` to
ids whose rows exist; the output must stay finite and equal the clean call's reference."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call, example, expect_matches
from sparse_attn_conformance.conformance.v2.poison import poisoned


@given(data=st.data())
def test_nothing_past_the_cut_or_in_an_ignored_lane_is_read(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel):
        gen = torch.Generator().manual_seed(case.seed)
        # a kernel that declares canonical windows or model rows keeps its lanes as drawn
        lanes = not (kernel.pre.canonical_windows or kernel.pre.canonical_rows)
        dirty = poisoned(case.inputs, gen, lanes=lanes, keep_row0=kernel.pre.finite_row0)
        out = call(kernel, dirty)
        expect_matches(out, case.inputs, what="output with unread rows poisoned",
                       against="the clean call's reference")
