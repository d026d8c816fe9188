"""The v2 device-style kernel (kernels/torch/tiled_v2.py) and its seeded faulty kernels
(kernels/faulty/v2.py): the correct kernel matches the reference on hand-built inputs that
cover v2's corners, and every mutant differs from the reference beyond the tolerance on a
hand-built input (its bug is reachable); the correct kernel passes on that input too, so the
input itself is in the contract."""

from __future__ import annotations

import inspect

import pytest
import torch

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.contracts.v2 import validate, validate_output
from sparse_attn_conformance.kernels import registry
from sparse_attn_conformance.kernels.faulty.v2 import MUTANTS_V2
from sparse_attn_conformance.kernels.torch.tiled_v2 import TiledKernelV2, sparse_attn

NAN = float("nan")


def make(window, idx=None, pos=None, *, S=1, H=1, D=8, BLOCK=4, n_ori=None, n_cmp=2,
         table=None, ratio=None, index_topk=None, scale=0.5, sink=0.0, seed=0):
    """v2 keyword arguments from python lists: `window` `[T][WIN]` flat rows, `idx`
    `[T][L]` compressed slot ids (`index_topk` defaults to L), `pos` `[T]` positions (0),
    `table` `[B][M]` (every column block 0 unless given); q and both pools random, the ori
    pool just large enough for the largest window row unless `n_ori` is given."""
    g = torch.Generator().manual_seed(seed)
    T = len(window)
    idx = [[] for _ in range(T)] if idx is None else idx
    rows = max([w for row in window for w in row] + [0])
    n_ori = rows // BLOCK + 1 if n_ori is None else n_ori
    table = [[0]] * (T // S) if table is None else table
    return dict(
        q=torch.randn(T, H, D, generator=g).bfloat16(),
        ori_kv=torch.randn(n_ori, BLOCK, D, generator=g).bfloat16(),
        window_swa_indices=torch.tensor(window, dtype=torch.int32),
        cmp_kv=torch.randn(n_cmp, BLOCK, D, generator=g).bfloat16(),
        cmp_block_table=torch.tensor(table, dtype=torch.int32),
        idx_topk=torch.tensor(idx, dtype=torch.int32).reshape(T, -1),
        position_ids=torch.tensor([0] * T if pos is None else pos, dtype=torch.int32)[:, None],
        attn_sink=torch.full((H,), sink),
        softmax_scale=scale, seq_per_batch=S,
        index_topk=len(idx[0]) if index_topk is None else index_topk, compress_ratio=ratio)


def flat(kw, w):
    """Flat row `w` of `ori_kv` (a view to write into)."""
    return kw["ori_kv"].reshape(-1, kw["ori_kv"].shape[-1])[w]


def check(kernel, kw):
    """`kernel`'s output against the reference, within the suite's tolerance."""
    inputs = validate(**kw)
    att = inputs.attended()
    gold = golden(att)
    tol = tolerance(att, gold)
    return compare(validate_output(kernel(**kw), inputs), gold, tol, dims=att.row_dims)


# -- inputs for the correct kernel: v2's corners ---------------------------------------------

def empty_tokens():
    # token 0: no live lane (negative window, compressed ids past the cut); token 1: live
    return make([[-1, -3, -1, -1], [0, 5, -1, 2]], [[0, 4], [0, 9]], [2, 40], ratio=4, n_cmp=4,
                table=[[0, 1, 2]], S=2)


def empty_with_minus_inf_sink():
    return make([[-1, -1], [3, -1]], sink=float("-inf"))


def duplicates():
    # window row 1 twice, compressed slot 0 twice
    return make([[1, 1, 2, -1]], [[0, 0, 3, -1]])


def nan_behind_ignored_lanes():
    # NaN in the last ori row (where -1 wraps), in compressed slot 5 (past the cut) and in
    # the row window lane -2 would name under a flat address of 10 ('-2' wraps there)
    kw = make([[-1, 3, -2, 1]], [[1, 5, -1, 2]], [11], ratio=4, n_ori=3, n_cmp=3,
              table=[[0, 2]])
    flat(kw, 11)[:] = NAN
    flat(kw, 10)[:] = NAN
    kw["cmp_kv"][2, 1] = NAN
    return kw


def nan_in_flat_row_zero():
    kw = make([[-1, 3, 5, -1]], [[-1, 2]])
    flat(kw, 0)[:] = NAN
    return kw


def ids_at_cut_bound():
    # pos 11, r 4: bound 3, so slot 2 is live and slot 3 is not (its row is huge)
    kw = make([[0, -1]], [[2, 3, -1]], [11], ratio=4)
    kw["cmp_kv"][0, 3] = 1e4
    return kw


def int32_edge_position():
    # pos + 1 overflows int32; r = 1 keeps every slot below 2**31 (the bound is 2**31)
    return make([[0]], [[7, 1]], [2**31 - 1], ratio=1, table=[[0, 1]])


def ratio_none():
    return make([[-1, 1]], [[6, 7, 0]], [0], table=[[1, 0]])


def win_not_tile_multiple():
    win = [-1] * 20
    win[18], win[3] = 7, 1
    return make([win])


def several_key_blocks():
    idx = [-1] * 40
    idx[1], idx[20], idx[39] = 3, 9, 14
    return make([[0, 2, -1, -1]], [idx], table=[[1, 0, 3, 2]], n_cmp=4)


def interleaved_tables():
    # B = 2 batches, S = 2 tokens each; tables point across each other's blocks
    return make([[0, 1], [1, 2], [4, 5], [-1, 6]], [[0, 5], [7, 1], [0, 5], [6, -1]],
                S=2, table=[[3, 1], [0, 2]], n_cmp=4)


def non_consecutive_window():
    return make([[7, 2, 9, 0]], pos=[3], n_ori=3)


def many_heads():
    return make([[0, 3, 6, -1]], [[1, 2]], H=20)


def nine_tokens():
    return make([[t, -1] for t in range(9)], [[t % 4] for t in range(9)])


CORRECT_CASES = [empty_tokens, empty_with_minus_inf_sink, duplicates, nan_behind_ignored_lanes,
                 nan_in_flat_row_zero, ids_at_cut_bound, int32_edge_position, ratio_none,
                 win_not_tile_multiple, several_key_blocks, interleaved_tables,
                 non_consecutive_window, many_heads, nine_tokens]


@pytest.mark.parametrize("build", CORRECT_CASES, ids=lambda f: f.__name__)
def test_tiled_v2_matches_the_reference(build):
    result = check(sparse_attn, build())
    assert result.ok, result.message


def test_empty_token_is_exactly_zero():
    o = sparse_attn(**empty_tokens())
    assert (o[0] == 0).all() and (o[1] != 0).any()


# -- one input per mutant, on which it is wrong ----------------------------------------------

def one_live_window_lane_in_two_blocks():
    # WIN 4 + IDX_TOPK 20 = two key blocks; only block 0 holds a live lane
    return make([[0, 2, -1, -1]], [[-1] * 20])


def live_lane_after_a_negative():
    return make([[-1, 5, -1, -1]], n_ori=3)


def window_across_two_pages():
    return make([[2, 3, 4, 5]])


def two_tokens_one_block():
    return make([[0, 1, -1, -1], [4, 6, 7, -1]], S=2)


def live_window_tail():
    win = [-1] * 20
    win[0], win[17] = 1, 6
    return make([win])


def nan_row_zero_beside_ignored():
    kw = make([[-1, 3]])
    flat(kw, 0)[:] = NAN
    return kw


def live_cmp_in_second_block():
    # WIN 4, IDX_TOPK 20: column 18 is lane 22, in block 1; the flag rule assuming WIN == 16
    # would look for it in columns 0-15
    idx = [-1] * 20
    idx[18] = 5
    return make([[0, -1, -1, -1]], [idx], table=[[0, 1]])


def nine_tokens_live():
    return make([[t] for t in range(9)])


def one_live_slot():
    return make([[-1]], [[1]])


def logits_below_the_sentinel():
    """One live window row, all positive, a query of -2^100 on its first dim and a -inf
    sink: the token's one logit is about -2^100, below -1e20."""
    kw = make([[0, -1]], sink=float("-inf"), scale=1.0)
    flat(kw, 0)[:] = 1.0
    kw["q"] = torch.zeros_like(kw["q"])
    kw["q"][..., 0] = -(2.0**100)
    return kw


def interleaved_cmp_table():
    return make([[-1], [-1]], [[1], [2]], S=1, table=[[1], [0]])


def slot_past_the_cap():
    return make([[0]], [[12, 1]], table=[[0, 1, 0, 1]])


def q_heads_17():
    return make([[0, 1, 2]], H=17)


def slot_at_2_24():
    # pos 2^24, r 1: the bound is 2^24 + 1, so slot 2^24 is live; in fp32 `pos + 1` rounds
    # to 2^24 and the slot is dropped (column 4096 of pages of 4096 rows)
    return make([[-1]], [[2**24]], [2**24], BLOCK=4096, ratio=1, table=[[0] * 4096 + [1]])


# integer edges (issue #19): each builder takes the integer at its edge, `t`


def position(t):
    # pos t, r 4: slot 5 (column 1, block 1) is live up to INT32_MAX
    return make([[-1]], [[5, -1]], [t], ratio=4, table=[[0, 1]])


def cmp_column(t):
    # pages of one row: slot t sits in column t (block 1); column t & 0xFFF holds block 0
    return make([[-1]], [[t]], [t], BLOCK=1, D=2, ratio=1, table=[[0] * t + [1]])


def cmp_block_id(t):
    # slot 0 in block t of a pool of t + 1 one-row blocks
    return make([[-1]], [[0]], [0], BLOCK=1, D=2, ratio=1, n_cmp=t + 1, table=[[t]])


def window_row(t):
    return make([[t]], D=2)


def tokens(t):
    # t tokens of one batch, each with one live window lane
    return make([[k % 8] for k in range(t)], S=t, D=2, n_ori=2)


def heads(t):
    return make([[0, 1]], H=t, D=2)


def fp32_position(t):
    # pos t, r 1: slot t is live (the cut is t + 1); in fp32 `t + 1` rounds to t from
    # 2^24 on when t + 1 is odd (pages of 4096 rows: column t // 4096 is block 1)
    return make([[-1]], [[t]], [t], BLOCK=4096, D=2, ratio=1,
                table=[[0] * (t // 4096) + [1]])


#: name -> (builder, integers just below the edge (right), at or past it (wrong))
THRESHOLDS = {
    "cut-int32-overflow": (position, [2**31 - 2, 2**24], [2**31 - 1]),
    "cmp-column-12bit": (cmp_column, [4095], [4096, 2**16 + 1]),
    "cmp-block-id-16": (cmp_block_id, [65535], [65536]),
    "window-row-16bit": (window_row, [65535], [65536, 2**17 + 3]),
    "token-grid-limit": (tokens, [65535], [65536]),
    "head-grid-limit": (heads, [65535], [65536]),
    "cut-fp32": (fp32_position, [2**24 - 1, 2**24 + 2], [2**24, 2**24 + 4]),
}


def _thresholds(side):
    return [pytest.param(name, t, id=f"{name}-{t}")
            for name, case in THRESHOLDS.items() for t in case[side]]


@pytest.mark.parametrize("name, t", _thresholds(1))
def test_integer_edge_mutant_is_right_below_its_edge(name, t):
    kw = THRESHOLDS[name][0](t)
    assert check(sparse_attn, kw).ok
    result = check(MUTANTS_V2[name], kw)
    assert result.ok, result.message


@pytest.mark.parametrize("name, t", _thresholds(2))
def test_integer_edge_mutant_is_wrong_past_its_edge(name, t):
    kw = THRESHOLDS[name][0](t)
    right = check(sparse_attn, kw)
    assert right.ok, right.message
    result = check(MUTANTS_V2[name], kw)
    # clearly outside: non-finite, or several tolerances off
    assert result.worst_ratio > 4, f"{name} at {t}: worst ratio {result.worst_ratio}"


MUTANT_CASES = {
    "distinct-addresses": lambda: make([[0, -1]], [[1, 5]], table=[[0, 0]]),
    "empty-tile-merge": one_live_window_lane_in_two_blocks,
    "window-by-count": live_lane_after_a_negative,
    "single-window-page": window_across_two_pages,
    "single-block-token-mix": two_tokens_one_block,
    "window-tail-dropped": live_window_tail,
    "ignored-reads-row-zero": nan_row_zero_beside_ignored,
    "block-flag-columns": live_cmp_in_second_block,
    "last-block-not-merged": live_cmp_in_second_block,
    "token-tile-remainder": nine_tokens_live,
    "overlay-offset": one_live_slot,
    "identity-block-table": interleaved_cmp_table,
    "cmp-tail-cap": slot_past_the_cap,
    "page-run-window": non_consecutive_window,
    "first-head-of-tile": q_heads_17,
    "cut-fp32": slot_at_2_24,
    "finite-empty-sentinel": logits_below_the_sentinel,
    **{name: (lambda b=build, t=past[0]: b(t)) for name, (build, _, past) in THRESHOLDS.items()
       if name != "cut-fp32"},
}


def test_every_mutant_has_an_exposing_input():
    assert set(MUTANT_CASES) == set(MUTANTS_V2)


@pytest.mark.parametrize("name", list(MUTANTS_V2))
def test_mutant_is_wrong_on_its_input(name):
    kw = MUTANT_CASES[name]()
    right = check(sparse_attn, kw)
    assert right.ok, f"the correct kernel fails on {name}'s input: {right.message}"
    wrong = check(MUTANTS_V2[name], kw)
    assert not wrong.ok, f"{name} passes on its input (worst ratio {wrong.worst_ratio})"


# -- the catalogue and the one-bug rule ------------------------------------------------------

def test_v2_kernels_are_registered():
    assert registry.CORRECT["reference-v2"] == "sparse_attn_conformance.kernels.torch.reference:sparse_attn_v2"
    assert registry.CORRECT["tiled-v2"] == "sparse_attn_conformance.kernels.torch.tiled_v2:sparse_attn"
    assert {"reference-v2", "tiled-v2"} <= set(registry.TORCH)
    assert registry.load("tiled-v2").convention == "v2"
    assert registry.load("reference-v2").convention == "v2"
    for name, kernel in MUTANTS_V2.items():
        entry = registry.CATALOGUE[f"mutant-v2-{name}"]
        assert entry.faulty and entry.torch, name
        assert entry.load() is kernel
        assert kernel.convention == "v2"


def test_catalogue_order_puts_v2_mutants_between_v1_and_pypto():
    faulty = registry.builtin_names(faulty=True)
    prefixes = {"mutant-pypto-": "pypto", "mutant-v2-": "v2", "mutant-fp8-": "fp8",
                "mutant-lse-": "lse", "mutant-triton-": "triton"}
    kinds = [next((k for p, k in prefixes.items() if n.startswith(p)), "v1") for n in faulty]
    assert kinds == sorted(kinds, key=["v1", "v2", "fp8", "lse", "pypto", "triton"].index)
    assert [n for n in faulty if n.startswith("mutant-v2-")] == [
        f"mutant-v2-{n}" for n in MUTANTS_V2]


def test_every_mutant_overrides_exactly_one_method():
    base = {n for n, v in inspect.getmembers(TiledKernelV2) if callable(v)}
    for name, kernel in MUTANTS_V2.items():
        cls = type(kernel)
        assert cls.__bases__ == (TiledKernelV2,), f"{name}: {cls.__bases__}"
        assert cls.__doc__ and "#" in cls.__doc__, f"{name}: no docstring naming its PR or issue"
        methods = [n for n, v in vars(cls).items() if callable(v)]
        assert len(methods) == 1 and methods[0] in base, f"{name} defines {methods}"
