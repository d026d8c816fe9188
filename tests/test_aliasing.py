"""The aliasing views and property (conformance/test_aliasing.py): each view keeps every
token's live rows (values, as a multiset) and really makes two live entries of one token
resolve to one physical row (through two table columns naming one block, or through one
storage passed as both pools); the property kills the seeded faulty kernels that gather
each distinct physical address once, and the correct torch kernels pass it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.conformance import test_aliasing
from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.contracts.v1 import live_mask
from sparse_attn_conformance.contracts.v2 import live_lanes
from sparse_attn_conformance.kernels.registry import kernel_under_test
from tests.in_profile import in_profile

PROPERTIES = [test_aliasing.test_two_live_entries_on_one_physical_row_count_twice]


def live_multisets_equal(a, b) -> bool:
    """Whether every token of calls `a` and `b` attends the same rows (values, as a
    multiset): the same count of live rows, equal once sorted (by a random projection; rows
    with equal keys are equal rows)."""
    def canonical(inputs):
        att = inputs.attended()
        rows, live = att.rows.double(), att.live
        rows = rows.reshape(-1, *rows.shape[-2:])
        live = live.reshape(-1, live.shape[-1])
        w = torch.randn(rows.shape[-1], generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
        key = torch.where(live, rows @ w, float("inf"))
        order = torch.argsort(key, dim=-1)
        rows = torch.where(live[..., None], rows, 0.0)
        return live.sum(-1), torch.gather(rows, 1, order[..., None].expand_as(rows))

    (na, ra), (nb, rb) = canonical(a), canonical(b)
    width = max(ra.shape[1], rb.shape[1])  # v2 lanes keep their widths; pad to compare
    pad = lambda r: torch.nn.functional.pad(r, (0, 0, 0, width - r.shape[1]))  # noqa: E731
    return bool((na == nb).all()) and bool((pad(ra) == pad(rb)).all())


def v1_address(inputs, b: int, s: int, p: int):
    """(pool tensor, block, row) that entry `p` of token `(b, s)` reads, and whether it is
    live."""
    win, block = inputs.window_size, inputs.BLOCK
    e = int(inputs.topk_idxs[b, s, p])
    live = bool(live_mask(inputs.topk_idxs, inputs.seqused_kv, win)[b, s, p])
    pool, table, slot = ((inputs.cmp_kv, inputs.cmp_block_table, e - win) if e >= win
                         else (inputs.ori_kv, inputs.ori_block_table, e))
    return pool, int(table[b, slot // block]), slot % block, live


def v2_address(inputs, t: int, lane: int, window: bool):
    """(pool tensor, block, row) that lane `lane` (window or compressed) of token `t`
    reads, and whether it is live."""
    block = inputs.BLOCK
    live_w, live_c = live_lanes(inputs)
    if window:
        w = int(inputs.window_swa_indices[t, lane])
        return inputs.ori_kv, w // block, w % block, bool(live_w[t, lane])
    c = int(inputs.idx_topk[t, lane])
    return (inputs.cmp_kv, int(inputs.cmp_block_table[t // inputs.S, c // block]), c % block,
            bool(live_c[t, lane]))


def made_of(kernel_name: str, data, one_storage: bool):
    kernel = kernel_under_test(kernel_name)
    case = draw_case(data, kernel)
    made = test_aliasing._made(kernel, case.inputs, case.seed, one_storage)
    assume(made is not None)
    return made


def check_aliasing(made, convention: str, one_storage: bool) -> None:
    a = made.aliased
    assert live_multisets_equal(made.base, a)
    x, x2 = made.ids
    assert x != x2, "two different entries"
    if convention == "v1":
        (b, s), (p1, p2) = made.token, made.positions
        assert int(made.base.topk_idxs[b, s, p2]) == x  # base: the repeat as itself
        first, second = v1_address(a, b, s, p1), v1_address(a, b, s, p2)
        parts = (x >= a.window_size, x2 >= a.window_size)
        assert made.parts == tuple("compressed" if p else "window" for p in parts)
    else:
        (t,), (l1, l2) = made.token, made.positions
        windows = tuple(p == "window" for p in made.parts)
        first, second = v2_address(a, t, l1, windows[0]), v2_address(a, t, l2, windows[1])
        parts = windows
    assert first[3] and second[3], "both entries live"
    assert first[0] is second[0], "one pool tensor"
    assert first[1:3] == second[1:3], "one physical row"
    assert (parts[0] != parts[1]) == one_storage
    if one_storage:
        assert a.ori_kv is a.cmp_kv
        kw = made.kwargs()
        assert kw["ori_kv"] is kw["cmp_kv"]
    else:
        assert a.ori_kv is not a.cmp_kv


FEW = settings(max_examples=5, derandomize=True, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.parametrize("one_storage", [False, True], ids=["table", "one-storage"])
@pytest.mark.parametrize("kernel_name, convention", [("reference", "v1"),
                                                     ("reference-v2", "v2")])
@FEW
@given(data=st.data())
def test_views_keep_live_rows_and_alias(kernel_name, convention, one_storage, data):
    check_aliasing(made_of(kernel_name, data, one_storage), convention, one_storage)


def run(prop, kernel: str, **kw) -> BaseException | None:
    try:
        in_profile(prop, "kill", shrink=False, **kw)(kernel=kernel_under_test(kernel))
    except BaseException as exc:  # noqa: BLE001 - the verdict is inspected below
        return exc
    return None


# the seeded distinct-address kernels are killed by the property in
# tests/test_property_strength.py (CATCHES), by its own assertion


@pytest.mark.parametrize("prop", PROPERTIES, ids=lambda p: p.__name__)
@pytest.mark.parametrize("kernel", ["reference", "tiled", "reference-v2", "tiled-v2"])
def test_correct_kernels_pass(prop, kernel):
    exc = run(prop, kernel, max_examples=3)
    assert exc is None, exc
