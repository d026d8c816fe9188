"""The v2 adapter of sglang's SM120 Triton kernel on fp8_ds_v4 pools
(kernels/adapters/sglang_v4.py): its declarations, that its translation addresses the rows
the contract names (checked without the kernel), and one direct call against the reference
on model rows (the interpreter is slow: one call)."""

from __future__ import annotations

import pytest
import torch

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.contracts import formats, v2
from sparse_attn_conformance.kernels.adapters import sglang_v4 as triton_sglang_v4
from sparse_attn_conformance.kernels.interface import KernelUnderTest
from sparse_attn_conformance.kernels.torch import reference
from sparse_attn_conformance.strategies.formats import quantise

needs_sglang = pytest.mark.skipif(triton_sglang_v4.sparse_attn.available() is not None,
                                  reason=str(triton_sglang_v4.sparse_attn.available()))

FMT = formats.FORMATS["fp8_ds_v4"]


def test_declarations():
    k = KernelUnderTest.of("sparse_attn_conformance.kernels.adapters.sglang_v4:sparse_attn", triton_sglang_v4.sparse_attn)
    assert k.convention == "v2" and k.kv_formats == ("fp8_ds_v4",)
    assert k.pre.dims == {"D": (512,)} and k.pre.note
    assert k.example_fraction == 0.1


def _pool(n, block, gen):
    rows = (torch.randn(n, block, FMT.D, generator=gen) * 0.5).bfloat16()
    return formats.to_pool("fp8_ds_v4", quantise(FMT, rows, power_of_two=True))


def small_call(seed=0):
    """Two batches of three tokens, model-like rows: each token's window the producer's
    ring rows (some lanes empty), its compressed ids a top-k of what its position allows,
    plus lanes the contract ignores (past the cut, negative, past `index_topk`)."""
    g = torch.Generator().manual_seed(seed)
    B, S, H, D, WIN, IDX, BLOCK, r = 2, 3, 4, 512, 6, 5, 4, 4
    T = B * S
    pos = torch.tensor([[9], [10], [11], [17], [18], [19]], dtype=torch.int32)
    n_ori, n_cmp = 6, 5
    win = torch.full((T, WIN), -1, dtype=torch.int32)
    for t in range(T):
        b, p = t // S, int(pos[t, 0])
        lo = max(0, p + 1 - WIN)
        rows = [b * 3 * BLOCK + (q % (3 * BLOCK)) for q in range(lo, p + 1)]
        win[t, :len(rows)] = torch.tensor(rows, dtype=torch.int32)
    win[1, 0] = -1  # an empty lane inside the row
    cmp_bt = torch.tensor([[3, 1], [0, 4]], dtype=torch.int32)
    idx = torch.full((T, IDX + 2), -1, dtype=torch.int32)
    for t in range(T):
        bound = (int(pos[t, 0]) + 1) // r
        ids = torch.randperm(bound, generator=g)[:IDX - 1].int()
        idx[t, :ids.numel()] = ids
        idx[t, IDX - 1] = bound  # past the cut: ignored
        idx[t, IDX] = 0  # past index_topk: ignored
    return dict(q=torch.randn(T, H, D, generator=g).bfloat16(),
                ori_kv=_pool(n_ori, BLOCK, g), window_swa_indices=win,
                cmp_kv=_pool(n_cmp, BLOCK, g), cmp_block_table=cmp_bt, idx_topk=idx,
                position_ids=pos, attn_sink=torch.randn(H, generator=g),
                softmax_scale=D ** -0.5, seq_per_batch=S, index_topk=IDX, compress_ratio=r)


def test_translation_addresses_the_contracts_rows():
    """The kernel's slots, read the kernel's way (page `i // BLOCK`, row `i % BLOCK` of its
    cache view), are each token's live rows in the reference's order."""
    kw = small_call()
    inputs = v2.validate(**kw)
    args = triton_sglang_v4.translate(inputs)
    rows, live = v2.gather_rows(inputs)
    block = inputs.BLOCK
    for t in range(inputs.T):
        got = []
        for cache, idx, n in ((args["k_cache"], args["indices"], args["topk_length"]),
                              (args["extra_k_cache"], args["extra_indices"],
                               args["extra_topk_length"])):
            slots = idx[t, 0, :int(n[t])].to(torch.int64)
            assert bool((slots >= 0).all())
            pool = cache.reshape(cache.shape[0], block, -1)
            got.append(formats.values(formats.read_rows(pool, slots // block, slots % block)))
        assert torch.equal(torch.cat(got), rows[t][live[t]])


@needs_sglang
def test_one_call_matches_the_reference_on_model_rows():
    kw = small_call()
    out = triton_sglang_v4.sparse_attn(**kw)
    inputs = v2.validate(**kw)
    expected = reference.sparse_attn_v2(**kw)
    assert out.shape == expected.shape
    gold = golden(inputs)
    res = compare(out, gold, tolerance(inputs, gold), dims=("t", "h"))
    assert res.ok, res.message
