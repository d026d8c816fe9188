"""flashinfer's V4 torch reference as a v2 kernel on fp8_ds_v4 pools
(kernels/adapters/flashinfer.py): its declarations, and one small hand-built call against
the suite's reference (skipped, with the reason, when flashinfer-python is not installed)."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.contracts import formats, v2
from sparse_attn_conformance.kernels.adapters import flashinfer as flashinfer_reference
from sparse_attn_conformance.kernels.interface import KernelUnderTest
from sparse_attn_conformance.kernels.torch import reference
from sparse_attn_conformance.strategies.formats import quantise

REASON = flashinfer_reference.sparse_attn.available()
needs_flashinfer = pytest.mark.skipif(REASON is not None, reason=str(REASON))

FMT = formats.FORMATS["fp8_ds_v4"]


def test_declarations():
    k = KernelUnderTest.of("sparse_attn_conformance.kernels.adapters.flashinfer:sparse_attn",
                           flashinfer_reference.sparse_attn)
    assert k.convention == "v2" and k.kv_formats == ("fp8_ds_v4",)
    assert k.lse is not None and k.lse.base == "e" and k.lse.with_sink
    assert k.pre.dims == {"D": (512,)}
    k = KernelUnderTest.of("sparse_attn_conformance.kernels.adapters.flashinfer:sparse_attn_o",
                           flashinfer_reference.sparse_attn_o)
    assert k.lse is None


def _pool(n, block, gen):
    rows = (torch.randn(n, block, FMT.D, generator=gen) * 0.5).bfloat16()
    return formats.to_pool("fp8_ds_v4", quantise(FMT, rows, power_of_two=True))


def small_call(seed=0):
    """Two batches of two tokens, BLOCK = 3 (a page of 1752 bytes, padded to 2304): window
    lanes with holes (an empty lane before live ones: prefix semantics would cut there),
    compressed ids past the cut, negative and past `index_topk`, one token with no live
    lane at all."""
    g = torch.Generator().manual_seed(seed)
    T, S, H, D, BLOCK, IDX, r = 4, 2, 3, 512, 3, 4, 2
    win = torch.tensor([[-1, 0, 4], [2, -1, 5], [7, 8, -1], [-1, -1, -1]], dtype=torch.int32)
    pos = torch.tensor([[5], [6], [3], [0]], dtype=torch.int32)
    # bounds (pos + 1) // r: 3, 3, 2, 0
    idx = torch.tensor([[2, -1, 0, 3, 1], [5, 1, 2, 0, 0], [0, 1, 1, 7, 0], [0, 1, 2, 3, 4]],
                       dtype=torch.int32)
    return dict(q=torch.randn(T, H, D, generator=g).bfloat16(), ori_kv=_pool(3, BLOCK, g),
                window_swa_indices=win, cmp_kv=_pool(4, BLOCK, g),
                cmp_block_table=torch.tensor([[2, 0], [1, 3]], dtype=torch.int32),
                idx_topk=idx, position_ids=pos, attn_sink=torch.randn(H, generator=g),
                softmax_scale=D ** -0.5, seq_per_batch=S, index_topk=IDX, compress_ratio=r)


@needs_flashinfer
def test_matches_the_reference_on_a_small_call():
    kw = small_call()
    inputs = v2.validate(**kw)
    assert flashinfer_reference.translate(inputs)["swa_k_cache"].shape == (3, 2304)
    o, lse = flashinfer_reference.sparse_attn(**kw)
    att = inputs.attended()
    expected = reference.sparse_attn_v2(**kw).double()
    result = compare(o.double(), expected, tolerance(att, golden(att)), "flashinfer",
                     "kernels.torch.reference.sparse_attn_v2", att.row_dims)
    assert result.ok, result.message
    assert torch.equal(o[3].float(), torch.zeros(inputs.H, 512))  # no live lane: exact 0
    # the LSE, natural log with the sink: recomputed here from the dequantised rows
    rows, live = v2.gather_rows(inputs)
    for t in range(inputs.T):
        for h in range(inputs.H):
            s = rows[t][live[t]].double() @ kw["q"][t, h].double() * kw["softmax_scale"]
            want = torch.logsumexp(torch.cat([s, kw["attn_sink"][h:h + 1].double()]), 0)
            assert math.isclose(float(lse[t, h]), float(want), rel_tol=1e-5, abs_tol=1e-5)
