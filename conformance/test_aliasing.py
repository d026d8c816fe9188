"""Aliasing: two live entries of one token that resolve to one physical row (contract
sections 1, 3, 8 and 9). Several table columns may name one block, and a single-pool kernel
keeps `ori_kv` and `cmp_kv` in one storage; live entries are a multiset, so a row that two
live entries (or lanes) name counts twice, whichever way they reach it. A kernel that
gathers each distinct physical address once (and counts it once) is wrong there only: apart
from the integer-edge cases, the drawn calls hold repeats of one entry, but no two
different entries on one row (kernels/faulty/v1.py `distinct-addresses`, kernels/faulty/v2.py
`distinct-addresses` pass every other property).

The property makes a call with aliasing from a drawn one (`conformance.v1.views.aliased`,
`conformance.v2.views.table_aliased` and `one_storage`): one entry of a token is repeated
(`base`), then the repeat is renamed so that it reaches the same physical row another way
(`aliased`), so every token's live rows, as values, are the same in both calls
(tests/test_aliasing.py checks that). The aliased call's output must match the reference,
which counts each live entry.

- table columns: two columns of one block table name one block, and two live entries of
  one token, in different columns at the same row, read one physical row (v1: window or
  compressed; v2: compressed; two v2 window lanes naming one flat row are a repeated entry,
  which the strategies draw);
- one storage: `ori_kv` and `cmp_kv` are one tensor object (the window blocks, then the
  compressed ones), and a compressed entry of a token reads the physical row of one of its
  live window entries.

Each example draws which way it tries first and falls back to the other; a call that allows
neither (no token with a live entry) is not run: Hypothesis discards it.
"""

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call, example, expect_matches


def _made(kernel, inputs, seed: int, one_storage: bool):
    """The case's `Aliasing` for the kernel's convention, or None."""
    gen = torch.Generator().manual_seed(seed)
    if inputs.CONVENTION == "v2":
        from sparse_attn_conformance.conformance.v2 import views

        if one_storage:
            return views.one_storage(inputs, gen, keep_windows=kernel.pre.canonical_windows)
        return views.table_aliased(inputs, gen)
    from sparse_attn_conformance.conformance.v1 import views

    return views.aliased(inputs, gen, one_storage=one_storage)


@given(data=st.data())
def test_two_live_entries_on_one_physical_row_count_twice(kernel, data):
    """One property for both ways (drawn per example, the other tried when a call allows
    only it): a slow kernel pays one call per example."""
    if kernel.pre.canonical_rows:
        pytest.skip(f"not exercised: {kernel.name} reads canonical rows only")
    case = draw_case(data, kernel)
    first = data.draw(st.booleans(), label="one storage first")
    for one_storage in (first, not first):
        made = _made(kernel, case.inputs, case.seed + 7, one_storage)
        if made is not None:
            break
    assume(made is not None)
    what = ("ori_kv and cmp_kv one storage and a compressed entry reading a window row"
            if one_storage else
            "two live entries reading one physical row through two table columns")
    with example(case, kernel):
        out = call(kernel, made.aliased, args=made.kwargs())
        expect_matches(out, made.aliased, what=f"output with {what}")
