"""vLLM's bf16 sparse MLA Triton kernel as a v2 kernel on bf16 pools (kernels/adapters/vllm.py):
its declarations, and one small hand-built call through triton's interpreter against the
suite's reference (skipped, with the reason, when vllm or triton is missing)."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.contracts import v2
from sparse_attn_conformance.kernels.adapters import vllm as triton_vllm
from sparse_attn_conformance.kernels.interface import KernelUnderTest
from sparse_attn_conformance.kernels.torch import reference

REASON = triton_vllm.sparse_attn.available()
needs_vllm = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def test_declarations():
    k = KernelUnderTest.of("sparse_attn_conformance.kernels.adapters.vllm:sparse_attn", triton_vllm.sparse_attn)
    assert k.convention == "v2" and k.kv_formats == ("bf16",)
    assert k.lse is not None and k.lse.base == "e" and k.lse.with_sink
    assert k.pre.dims == {"D": (512,)} and k.example_fraction == 0.1
    k = KernelUnderTest.of("sparse_attn_conformance.kernels.adapters.vllm:sparse_attn_o", triton_vllm.sparse_attn_o)
    assert k.lse is None


def small_call(seed=0):
    """Two batches of two tokens, BLOCK = 3, H = 3 (one program of 16 heads, 13 masked):
    window lanes with holes, compressed ids past the cut, negative and past `index_topk`,
    one token with no live lane at all (8 lanes: padded to 16)."""
    g = torch.Generator().manual_seed(seed)
    T, S, H, D, BLOCK, IDX, r = 4, 2, 3, 512, 3, 4, 2
    win = torch.tensor([[-1, 0, 4], [2, -1, 5], [7, 8, -1], [-1, -1, -1]], dtype=torch.int32)
    pos = torch.tensor([[5], [6], [3], [0]], dtype=torch.int32)
    idx = torch.tensor([[2, -1, 0, 3, 1], [5, 1, 2, 0, 0], [0, 1, 1, 7, 0], [0, 1, 2, 3, 4]],
                       dtype=torch.int32)
    return dict(q=torch.randn(T, H, D, generator=g).bfloat16(),
                ori_kv=torch.randn(3, BLOCK, D, generator=g).bfloat16(), window_swa_indices=win,
                cmp_kv=torch.randn(4, BLOCK, D, generator=g).bfloat16(),
                cmp_block_table=torch.tensor([[2, 0], [1, 3]], dtype=torch.int32),
                idx_topk=idx, position_ids=pos, attn_sink=torch.randn(H, generator=g),
                softmax_scale=D ** -0.5, seq_per_batch=S, index_topk=IDX, compress_ratio=r)


@needs_vllm
def test_matches_the_reference_on_a_small_call():
    kw = small_call()
    inputs = v2.validate(**kw)
    assert triton_vllm.translate(inputs)["indices"].shape == (4, 1, 16)
    o, lse = triton_vllm.sparse_attn(**kw)
    att = inputs.attended()
    expected = reference.sparse_attn_v2(**kw).double()
    result = compare(o.double(), expected, tolerance(att, golden(att)), "vLLM kernel",
                     "kernels.torch.reference.sparse_attn_v2", att.row_dims)
    assert result.ok, result.message
    assert torch.equal(o[3], torch.zeros(inputs.H, 512))  # no live lane: exact 0
    rows, live = v2.gather_rows(inputs)
    for t in range(3):  # the LSE with the sink (the adapter's) of each token with a live lane
        for h in range(inputs.H):
            s = rows[t][live[t]].double() @ kw["q"][t, h].double() * kw["softmax_scale"]
            want = torch.logsumexp(torch.cat([s, kw["attn_sink"][h:h + 1].double()]), 0)
            assert math.isclose(float(lse[t, h]), float(want), rel_tol=1e-3, abs_tol=1e-3)
    assert "vllm" not in sys.modules  # the stub kept vLLM's package out
