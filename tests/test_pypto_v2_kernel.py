"""The v2 pypto kernel (kernels.pypto.v2_kernel) against the v2 reference on handcrafted
inputs, and its seeded bugs. Every call runs in the pypto worker process (seconds a call)."""

import pytest
import torch

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.contracts import v2
from sparse_attn_conformance.contracts.checks import ContractError
from sparse_attn_conformance.kernels.pypto import v2_kernel as pypto_v2_kernel
from sparse_attn_conformance.kernels.pypto.v2_program import BUGS
from sparse_attn_conformance.kernels.torch import reference

H, D, BLOCK = 2, 16, 4
N_ORI, N_CMP = 4, 6
NAN = float("nan")


def make_inputs(window, idx, positions, *, S=1, cmp_table=None, ratio=4, index_topk=None,
                seed=0, nan_rows=(), nan_slots=(), sink=None) -> dict:
    """v2 keyword arguments from lists: ``window`` [T][WIN] flat ori rows, ``idx`` [T][L]
    compressed slot ids, ``positions`` [T]; ``cmp_table`` [B][M] (default: an interleaved,
    non-identity table); ``nan_rows`` flat ori rows and ``nan_slots`` (batch, slot) pairs
    set to NaN (they must be rows no live lane reads)."""
    g = torch.Generator().manual_seed(seed)
    T = len(window)
    B = T // S
    if cmp_table is None:
        cmp_table = [[(3 * col + 2 * b + 1) % N_CMP for col in range(2)] for b in range(B)]
    kw = dict(
        q=torch.randn(T, H, D, generator=g).bfloat16(),
        ori_kv=torch.randn(N_ORI, BLOCK, D, generator=g).bfloat16(),
        window_swa_indices=torch.tensor(window, dtype=torch.int32),
        cmp_kv=torch.randn(N_CMP, BLOCK, D, generator=g).bfloat16(),
        cmp_block_table=torch.tensor(cmp_table, dtype=torch.int32),
        idx_topk=torch.tensor(idx, dtype=torch.int32),
        position_ids=torch.tensor(positions, dtype=torch.int32).reshape(T, 1),
        attn_sink=torch.randn(H, generator=g) if sink is None else torch.tensor(sink),
        softmax_scale=D ** -0.5,
        seq_per_batch=S,
        index_topk=len(idx[0]) if index_topk is None else index_topk,
        compress_ratio=ratio,
    )
    for w in nan_rows:
        kw["ori_kv"][w // BLOCK, w % BLOCK] = NAN
    for b, c in nan_slots:
        kw["cmp_kv"][cmp_table[b][c // BLOCK], c % BLOCK] = NAN
    return kw


def diff(kernel, kw):
    """The comparison of ``kernel``'s output with the reference (the suite's tolerance)."""
    inputs = v2.validate(**kw)
    want = reference.sparse_attn_v2(**kw)
    got = kernel(**kw)
    assert got.shape == want.shape
    return compare(got, golden(inputs), tolerance(inputs, golden(inputs)), dims=("t", "h")), got


def check(kw):
    result, got = diff(pypto_v2_kernel.sparse_attn, kw)
    assert result.ok, result.message
    return got


# One call covers most cases (a call costs seconds): WIN 8, IDX_TOPK 8, L 10, ratio 4, B 2, S 2.
# Token 0 (pos 9, bound 2): duplicates, negatives of every size, ids at the bound 2 and past.
# Token 1 (pos 10, bound 2): flat row 0 live; NaN rows behind its negative lanes are unread.
# Token 2 (pos 14, bound 3): no live lane at all -> exact 0. Token 3 (pos 16, bound 4).
# Columns 8, 9 of idx_topk (>= index_topk) hold live-looking slots that must not be read.
MIXED = dict(
    window=[[5, 5, -1, 3, -2**31, 12, -7, 0],
            [0, 1, 2, -1, -1, 9, 9, 15],
            [-1] * 8,
            [8, 9, 10, 11, 12, 13, -1, -1]],
    idx=[[0, 1, 1, 2, -1, 2**31 - 1, -2**31, 3, 0, 1],
         [1, -5, 2, 0, 0, 7, -1, -1, 0, 0],
         [-1, 3, 4, 5, 6, 7, 2**31 - 2, -1, 0, 1],
         [3, 2, 1, 0, 4, 5, 4, -1, 1, 1]],
    positions=[9, 10, 14, 16],
    S=2, index_topk=8,
)


def mixed(**changes):
    return make_inputs(**{**MIXED, **changes})


def test_mixed_lanes_match_reference_and_ignored_nan_rows_do_not_leak():
    # NaN behind rows no live lane of the token's batch reads: ori row 4 (never live), slot 5
    # and 7 of batch 0 (past the bound), slot 5, 6, 7 of batch 1 (token 3 has bound 4).
    kw = mixed(nan_rows=(4, 6, 7), nan_slots=((0, 5), (0, 7), (1, 5), (1, 6), (1, 7)))
    got = check(kw)
    assert torch.isfinite(got).all()
    assert torch.equal(got[2], torch.zeros(H, D))  # token 2: nothing live


def test_duplicates_count_twice():
    once = dict(window=[[5, 3, -1, -1, -1, -1, -1, -1]], idx=[[1, -1, -1, -1]], positions=[9])
    twice = dict(window=[[5, 5, 3, -1, -1, -1, -1, -1]], idx=[[1, 1, -1, -1]], positions=[9])
    a, b = check(make_inputs(**once)), check(make_inputs(**twice))
    assert (a - b).abs().max() > 1e-3  # the duplicates change the weights


@pytest.mark.parametrize("ratio", [None, 1])
def test_compress_ratio_none_and_one(ratio):
    # None: no cut (every slot id >= 0 live); 1: c <= pos. Positions 3 and 6; slot 7 is the
    # last of a 2-column table, live only without a cut.
    kw = make_inputs(window=[[0, 1, 2, 3, -1, -1, -1, -1], [4, -1, -1, -1, -1, -1, -1, -1]],
                     idx=[[3, 4, 7, -1], [6, 7, 0, 5]], positions=[3, 6], ratio=ratio,
                     S=2, cmp_table=[[2, 5]])
    check(kw)


@pytest.mark.parametrize("ratio", [4, 1, 3, 2**30 + 1, 2**31, 2**31 + 5])
def test_positions_near_int32_max_cut_in_integers(ratio):
    # Per token: live slots 0 and 7, then the ids at and just past its bound, which are
    # ignored and would be outside the table, so a cut that rounds (fp32 is exact only below
    # 2**24) and lets one in fails the call (the cut-fp32 mutant's test shows such a case).
    # Ratios past 2**30 and 2**31 take the program's no-multiply branches.
    positions = [2**31 - 2, 2147483461, 2**31 - 1, 5]
    idx = []
    for p in positions:
        bound = (p + 1) // ratio
        ids = [c for c in (0, 7) if c < bound] + [c for c in (bound, bound + 1, bound + 14)
                                                 if c < 2**31]
        idx.append((ids + [-1] * 5)[:5])
    kw = make_inputs(window=[[1, -1, 2, -1, -1, -1, -1, -1]] * 4, idx=idx, positions=positions,
                     ratio=ratio, cmp_table=[[4, 1], [0, 3], [2, 5], [1, 0]])
    check(kw)


def test_cut_bound_is_the_first_ignored_slot_and_nan_at_the_safe_address_does_not_leak():
    # pos 7, ratio 4: bound 2, slot 1 live, slot 2 ignored (with NaN behind it). Ignored
    # lanes read flat row 0 of either pool: NaN there too, and no live lane reads it.
    kw = make_inputs(window=[[1, -1, 3, -1, -1, -1, -1, -1]], idx=[[1, 2, -1, -1]],
                     positions=[7], nan_slots=((0, 2),), nan_rows=(0,))
    kw["cmp_kv"][0, 0] = NAN  # batch 0's table is [1, 4]: block 0 is nobody's
    assert torch.isfinite(check(kw)).all()


def test_bad_argument_is_named():
    kw = mixed()
    kw["window_swa_indices"][0, 0] = N_ORI * BLOCK
    with pytest.raises(ContractError, match="window_swa_indices"):
        pypto_v2_kernel.sparse_attn(**kw)
    kw = mixed(ratio=0)
    with pytest.raises(ContractError, match="compress_ratio"):
        pypto_v2_kernel.sparse_attn(**kw)


def test_declarations():
    kernel = pypto_v2_kernel.sparse_attn
    assert kernel.convention == "v2" and kernel.max_packed_batch == 0
    pre = kernel.preconditions
    assert not pre.finite_row0 and not pre.canonical_windows and pre.max_position is None
    assert pre.accepts({"H": H, "D": D, "BLOCK": BLOCK, "WIN": 8, "IDX_TOPK": 8})
    assert not pre.accepts({"H": 64})
    with pytest.raises(LookupError, match="pypto v2 bug"):
        pypto_v2_kernel.faulty("no-such-bug")


# Each seeded bug against an input that exposes it (and on which the correct kernel is
# right): the lane only the mutant gets wrong holds the one large row (4.0), q is all ones.
EXPOSING = {
    # slot 2 == bound of pos 9 / ratio 4: the mutant attends it
    "cut-inclusive": dict(window=[[1, -1, -1, -1, -1, -1, -1, -1]], idx=[[1, 2, -1, -1]],
                          positions=[9]),
    # flat row 0 live in the window: the mutant drops it
    "window-positive": dict(window=[[0, 1, -1, -1, -1, -1, -1, -1]], idx=[[1, -1, -1, -1]],
                            positions=[9]),
}


@pytest.mark.parametrize("bug", sorted(set(BUGS) - {"cut-fp32"}))
def test_seeded_bug_differs_from_reference(bug):
    kw = make_inputs(**EXPOSING[bug], seed=3)
    if bug == "cut-inclusive":
        kw["cmp_kv"][kw["cmp_block_table"][0, 0], 2] = 4.0
    else:
        kw["ori_kv"][0, 0] = 4.0
    kw["q"][:] = 1.0
    check(kw)
    result, _ = diff(pypto_v2_kernel.faulty(bug), kw)
    assert not result.ok, f"mutant {bug} passed on its exposing input"


def test_cut_in_fp32_fails_past_2_24_and_is_right_below_it():
    """The fp32 cut (upstream's) is exact below 2**24. Near 2**31 with ratio 3 it lets in a
    slot id equal to the bound (ignored, and outside the table): token 0 for an int -> fp32
    cast that truncates, token 1 for one that rounds to nearest. Just below 2**25 with
    ratio 2**22 it lets in slot 7, inside the table: pos + 1 = 2**25 - 1 rounds up to 2**25.
    Either read gives a wrong output (the kernel clamps addresses as a device would read
    them), not a simulator error."""
    mutant = pypto_v2_kernel.faulty("cut-fp32")
    result, _ = diff(mutant, mixed())
    assert result.ok, result.message
    positions = [2147483518, 2147483617]
    kw = make_inputs(window=[[1, -1, -1, -1, -1, -1, -1, -1]] * 2,
                     idx=[[0, (p + 1) // 3, -1, -1] for p in positions], positions=positions,
                     ratio=3, cmp_table=[[4, 1], [0, 3]])
    check(kw)
    result, _ = diff(mutant, kw)
    assert not result.ok, "the fp32 cut passed near 2**31"
    # exact cut floor((2**25 - 1) / 2**22) = 7: slot 7 (column 1, pool block 1) is ignored
    kw = make_inputs(window=[[1, -1, -1, -1, -1, -1, -1, -1]], idx=[[0, 7, -1, -1]],
                     positions=[2**25 - 2], ratio=2**22, cmp_table=[[4, 1]], seed=3)
    kw["cmp_kv"][1, 3] = 4.0
    kw["q"][:] = 1.0
    check(kw)
    result, _ = diff(mutant, kw)
    assert not result.ok, "the fp32 cut passed just below 2**25"
