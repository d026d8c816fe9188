"""The threshold mutants (kernels/faulty/v1.py): each is right just below its threshold and
clearly wrong (or faulting) just above it, on inputs built by hand. The correct device-style
kernel passes on every one of these inputs, so the inputs themselves are in the contract."""

from __future__ import annotations

import inspect

import pytest
import torch

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.contracts.v1 import validate, validate_output
from sparse_attn_conformance.kernels.faulty.v1 import MUTANTS
from sparse_attn_conformance.kernels.torch.tiled import TiledKernel


def make(*, B=1, S=1, H=1, D=8, WIN=4, IDX_TOPK=0, BLOCK=4, cmp_cols=1, n_cmp=1,
         seqused=None, scale=0.5, sink=0.0, seed=0):
    """Random q and pools; window block `j` of batch `b` is block `b * cols + j`; every
    compressed column points at block 0; every token's row is `arange(TOPK)` (the model's
    HCA row); `seqused_kv` is WIN unless given."""
    g = torch.Generator().manual_seed(seed)
    cols = -(-WIN // BLOCK)
    topk = WIN + IDX_TOPK
    return dict(
        q=torch.randn(B, S, H, D, generator=g).bfloat16(),
        ori_kv=torch.randn(B * cols, BLOCK, D, generator=g).bfloat16(),
        ori_block_table=torch.arange(B * cols, dtype=torch.int32).reshape(B, cols),
        cmp_kv=torch.randn(n_cmp, BLOCK, D, generator=g).bfloat16(),
        cmp_block_table=torch.zeros(B, cmp_cols, dtype=torch.int32),
        topk_idxs=torch.arange(topk, dtype=torch.int32).expand(B, S, topk).contiguous(),
        attn_sink=torch.full((H,), sink),
        seqused_kv=torch.full((B,), WIN if seqused is None else seqused, dtype=torch.int32),
        softmax_scale=scale, window_size=WIN)


def wrow(kw, b, w):
    """The row of window slot `w` of batch `b` (a view to write into)."""
    block = kw["ori_kv"].shape[1]
    return kw["ori_kv"][kw["ori_block_table"][b, w // block], w % block]


def crow(kw, b, c):
    """The row of compressed slot `c` of batch `b`."""
    block = kw["cmp_kv"].shape[1]
    return kw["cmp_kv"][kw["cmp_block_table"][b, c // block], c % block]


# -- the inputs, one function per (mutant, side); `t` is the side's parameter ----------------

def head_tile(H):
    return make(H=H, WIN=8, BLOCK=8, scale=1.0)


def d_chunk(D):
    kw = make(D=D, WIN=8, BLOCK=8, scale=0.25)
    kw["q"][..., -1] = 4.0                      # the last dimension carries the scores
    kw["ori_kv"][..., -1] = torch.tensor([2.0, -2.0]).repeat(4)
    return kw


def index_buffer(topk):
    # WIN = 1000, HCA row `arange(WIN), WIN + arange(topk - WIN)`, all live; window slot 0
    # dominates, and the buffer wrap overwrites it with the compressed entry at position 1000
    kw = make(WIN=1000, IDX_TOPK=topk - 1000, BLOCK=1000, seqused=topk, scale=1.0)
    kw["q"][:] = 0.0
    kw["q"][..., 0] = 4.0
    kw["ori_kv"][..., 0] = 0.0
    kw["cmp_kv"][..., 0] = 0.0
    wrow(kw, 0, 0)[0] = 3.0
    return kw


def batch_grid(B):
    kw = make(B=B, WIN=4, BLOCK=4, scale=1.0)
    kw["seqused_kv"][0] = 1                     # batch 0 sees only its slot 0
    return kw


def token_group(S):
    return make(S=S, WIN=16, BLOCK=16, seqused=12, scale=1.0)


def int16_entry(e):
    # one live compressed entry `e` (WIN = 4): slot e - 4 in column 7 of BLOCK 4096 rows
    c = e - 4
    kw = make(WIN=4, IDX_TOPK=1, BLOCK=4096, cmp_cols=8, n_cmp=2, seqused=e + 1, sink=float("-inf"))
    kw["cmp_block_table"][0, 7] = 1
    kw["topk_idxs"][0, 0, :4] = -1
    kw["topk_idxs"][0, 0, 4] = e
    assert kw["cmp_block_table"][0, c // 4096] == 1
    return kw


def uint16_slot(c):
    # one live compressed slot c: column 15 holds slot 65535, column 16 slot 65536
    kw = make(WIN=4, IDX_TOPK=1, BLOCK=4096, cmp_cols=17, n_cmp=3, seqused=4 + c + 1,
              sink=float("-inf"))
    kw["cmp_block_table"][0, 15] = 1
    kw["cmp_block_table"][0, 16] = 2
    kw["topk_idxs"][0, 0, :4] = -1
    kw["topk_idxs"][0, 0, 4] = 4 + c
    return kw


def int32_length(seqused):
    # S = 1: `seqused + 1` passes INT32_MAX only at seqused = INT32_MAX; the window slots and
    # compressed slot 0 are live (pages of 2^16 rows: 2^15 columns cover 2^31 slots)
    return make(WIN=4, IDX_TOPK=1, BLOCK=2**16, cmp_cols=2**15, seqused=seqused, scale=1.0)


def one_cmp_slot(c, *, BLOCK, n_cmp=1, cmp_cols=None):
    """One live compressed slot `c` (WIN = 4, the window entries `-1`) and an `-inf` sink:
    the output is that slot's row."""
    cols = c // BLOCK + 1 if cmp_cols is None else cmp_cols
    kw = make(WIN=4, IDX_TOPK=1, BLOCK=BLOCK, cmp_cols=cols, n_cmp=n_cmp, seqused=4 + c + 1,
              sink=float("-inf"))
    kw["topk_idxs"][0, 0, :4] = -1
    kw["topk_idxs"][0, 0, 4] = 4 + c
    return kw


def fp32_slot(c):
    # entry 4 + c: exact in fp32 below 2^24; 4 + 2^24 + 1 is odd and rounds to its neighbour
    return one_cmp_slot(c, BLOCK=4096)


def column_12bit(col):
    # pages of one row: slot `col` sits in column `col`, the only one mapped to block 1
    kw = one_cmp_slot(col, BLOCK=1, n_cmp=2)
    kw["cmp_block_table"][0, col] = 1
    return kw


def block_id_16(block):
    # slot 0 in block `block` of a pool of 65537 one-row blocks
    kw = one_cmp_slot(0, BLOCK=1, n_cmp=2**16 + 1)
    kw["cmp_block_table"][0, 0] = block
    return kw


def token_grid(S):
    # one batch of S tokens; the last 4 see the window (seqused 4), the last one all of it
    return make(S=S, D=2, WIN=4, BLOCK=4, scale=1.0)


def head_grid(H):
    return make(H=H, D=2, WIN=4, BLOCK=4, scale=1.0)


def fp16_scores(k):
    # q = 100, key rows k and 80: q.k = 800 k (64800 fits fp16, 65600 does not)
    kw = make(WIN=4, BLOCK=4, seqused=2, scale=1e-3)
    kw["q"][:] = 100.0
    wrow(kw, 0, 0)[:] = k
    wrow(kw, 0, 1)[:] = 80.0
    return kw


def fp16_acc(v):
    kw = make(WIN=4, BLOCK=4, seqused=2, scale=1.0, sink=float("-inf"))
    kw["q"][:] = 0.0
    kw["q"][..., 0] = 1.0
    wrow(kw, 0, 0)[:] = v                       # logit v: dominant; the other is 0
    wrow(kw, 0, 1)[:] = 0.0
    return kw


def two_logits(z, *, WIN=4, pos=1, seqused=None, sink=0.0):
    """q = e_0, scale `z`: window slot `pos` scores `z`, every other slot 0; the value rows
    are within [-1, 1], so `exp(z) * v` overflows exactly when `exp(z)` does."""
    kw = make(WIN=WIN, BLOCK=WIN, seqused=seqused, scale=z, sink=sink)
    kw["q"][:] = 0.0
    kw["q"][..., 0] = 1.0
    kw["ori_kv"][:] = kw["ori_kv"].clamp(-1, 1)
    kw["ori_kv"][..., 0] = 0.0
    wrow(kw, 0, pos)[0] = 1.0
    return kw


def exp_unshifted(z):
    return two_logits(z)


def stale_max(z):
    # the first tile's keys (slots 0..15) score 0; slot 16, in the second tile, scores z
    return two_logits(z, WIN=32, pos=16)


def max_before_scale(spread):
    # scale -spread: slot 0 scores 0, slot 1 scores -spread (two live slots, no sink)
    return two_logits(-spread, seqused=2, sink=float("-inf"))


def drops_last_key(topk):
    kw = make(WIN=topk, BLOCK=topk, seqused=topk, scale=1.0)
    kw["q"][:] = 0.0
    kw["q"][..., 0] = 2.0
    kw["ori_kv"][..., 0] = 0.0
    wrow(kw, 0, topk - 1)[0] = 3.0              # the last position dominates
    return kw


def candidate_cap(live):
    kw = make(WIN=1504, BLOCK=1504, seqused=live, scale=1.0)
    kw["q"][:] = 0.0
    kw["q"][..., 0] = 2.0
    kw["ori_kv"][..., 0] = 0.0
    wrow(kw, 0, live - 1)[0] = 3.0              # the last live entry dominates
    return kw


def contiguous(_):
    return make(B=2, S=3, H=4, D=8, WIN=8, IDX_TOPK=4, BLOCK=4, cmp_cols=2, n_cmp=2,
                seqused=11)


def strided(which):
    kw = contiguous(None)
    if which == "transposed q":
        kw["q"] = kw["q"].transpose(1, 2).contiguous().transpose(1, 2)
    elif which == "offset ori_kv":
        buf = torch.full((kw["ori_kv"].shape[0] + 1, *kw["ori_kv"].shape[1:]), float("nan"),
                         dtype=torch.bfloat16)
        buf[1:] = kw["ori_kv"]
        kw["ori_kv"] = buf[1:]
    elif which == "expanded attn_sink":
        kw["attn_sink"] = torch.full((1,), 0.25).expand(kw["attn_sink"].shape[0])
    return kw


def table_garbage(entry):
    # only window column 0 is live (seqused 2 of WIN 8, BLOCK 4); column 1 holds `entry`
    kw = make(WIN=8, BLOCK=4, seqused=2)
    kw["ori_block_table"][0, 1] = entry
    return kw


#: name -> (input builder, parameters just below (right), just above (wrong), what above gives:
#: None for wrong numbers, else (exception type, message pattern))
CASES = {
    "head-tile-remainder": (head_tile, [24, 48], [25, 47], None),
    "d-chunk-remainder": (d_chunk, [80, 160], [81], None),
    "index-buffer-wrap": (index_buffer, [1000], [1001], None),
    "batch-grid-wrap": (batch_grid, [96], [97], None),
    "token-group-wrap": (token_group, [6], [7], None),
    "int16-index": (int16_entry, [32767], [32768], None),
    "uint16-slot": (uint16_slot, [65535], [65536], None),
    "fp16-scores": (fp16_scores, [81.0], [82.0], None),
    "fp16-accumulator": (fp16_acc, [60000.0], [70000.0], None),
    "exp-unshifted": (exp_unshifted, [88.0], [89.0], None),
    "stale-max": (stale_max, [88.0], [89.0], None),
    "strides-ignored": (strided, ["contiguous"], ["transposed q", "offset ori_kv"], None),
    "table-prefetch": (table_garbage, [1], [99, -7], (IndexError, "out of range")),
    "drops-tile-last-key": (drops_last_key, [143], [144], None),
    "max-before-scale": (max_before_scale, [88.0], [89.0], None),
    "candidate-cap": (candidate_cap, [1500], [1501], None),
    "int32-length-overflow": (int32_length, [2**31 - 2], [2**31 - 1], None),
    "fp32-slot": (fp32_slot, [2**24 - 8, 2**24], [2**24 + 1, 2**30 + 3], None),
    "column-12bit": (column_12bit, [4095], [4096, 2**16 + 1], None),
    "block-id-16": (block_id_16, [65535], [65536], None),
    "token-grid-limit": (token_grid, [65535], [65536], None),
    "head-grid-limit": (head_grid, [65535], [65536], None),
}

FAULTS = {
    # a view whose storage is smaller than its row-major size: the read itself fails
    "strides-ignored": (strided, "expanded attn_sink", RuntimeError, "out of bounds for storage"),
}


def _check(kernel, kw):
    inputs = validate(**kw)
    gold = golden(inputs)
    tol = tolerance(inputs, gold)
    ok = compare(validate_output(TiledKernel()(**kw), inputs), gold, tol)
    assert ok.ok, f"the correct kernel fails on this input: {ok.message}"
    return compare(validate_output(kernel(**kw), inputs), gold, tol)


def _params(side):
    return [pytest.param(name, t, id=f"{name}-{t}")
            for name, case in CASES.items() for t in case[side]]


@pytest.mark.parametrize("name, t", _params(1))
def test_right_below_threshold(name, t):
    result = _check(MUTANTS[name], CASES[name][0](t))
    assert result.ok, result.message


@pytest.mark.parametrize("name, t", _params(2))
def test_wrong_above_threshold(name, t):
    build, _, _, fault = CASES[name]
    if fault is None:
        result = _check(MUTANTS[name], build(t))
        # clearly outside: non-finite, or several tolerances off
        assert result.worst_ratio > 4, f"{name} at {t}: worst ratio {result.worst_ratio}"
    else:
        with pytest.raises(fault[0], match=fault[1]):
            _check(MUTANTS[name], build(t))


@pytest.mark.parametrize("name", list(FAULTS))
def test_faults_above_threshold(name):
    build, t, exc, match = FAULTS[name]
    with pytest.raises(exc, match=match):
        _check(MUTANTS[name], build(t))


def test_every_threshold_mutant_has_cases():
    assert set(CASES) <= set(MUTANTS)


def test_every_mutant_is_one_subclass():
    base = {n for n, _ in inspect.getmembers(TiledKernel)}
    for name, kernel in MUTANTS.items():
        cls = type(kernel)
        assert isinstance(kernel, TiledKernel) and cls is not TiledKernel, name
        assert cls.__bases__ == (TiledKernel,), f"{name}: {cls.__bases__}"
        assert cls.__doc__ and cls.__doc__ != TiledKernel.__doc__, f"{name}: no docstring"
        overridden = [n for n, v in vars(cls).items()
                      if n in base and callable(v) and not n.startswith("__")
                      or n == "__call__"]
        assert 1 <= len(overridden) <= 4, f"{name} overrides {overridden}"
