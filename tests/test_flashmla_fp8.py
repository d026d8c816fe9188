"""The FlashMLA FP8 sparse decode adapters (kernels/adapters/flashmla_fp8.py), checked on the CPU.

No GPU and no FlashMLA here: `standin` below is an EMULATION of the wheel's
`flash_mla.flash_mla_with_kvcache(..., use_legacy=True)` in torch, used only in this file.
It follows FlashMLA's documented semantics: the shape checks of the legacy op (from the
wheel's docstring and the checks compiled into its extension), each cache dequantised from
its bytes by the documented layout (written here from FlashMLA's description, not through
`contracts.formats`), an index valid iff it is not -1 (any other out-of-range index raises,
as the kernel would fault), `o = softmax(scale * q k^T) v` over the valid indices of both
caches, times `exp(lse) / (exp(lse) + exp(attn_sink))`, `lse` natural log without the sink,
`+inf` and `o = 0` for a query with nothing valid. With `sm90=True` the V3.2 scale is
rounded to bf16 and the dequantised rows to bf16 before the dot products, as the SM90
kernel's source does (a prediction, docs/findings/flashmla.md).

The adapter + emulation must match `kernels.torch.reference.sparse_attn_v2` (attention.compare)
and the reference LSE (attention.lse) on drawn cases, in each adapter's format.
"""

from __future__ import annotations

import types

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.attention.lse import compare_lse
from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.contracts import v2
from sparse_attn_conformance.kernels.adapters import flashmla_fp8
from sparse_attn_conformance.kernels.interface import KernelUnderTest
from sparse_attn_conformance.plugin import profiles

ADAPTERS = {
    "sparse_attn_v4": flashmla_fp8.sparse_attn_v4,
    "sparse_attn_v4_one_cache": flashmla_fp8.sparse_attn_v4_one_cache,
    "sparse_attn_v32": flashmla_fp8.sparse_attn_v32,
}
#: the work budget of the drawn cases (smoke's)
SMALL_BUDGET = 2**17  # small cases: the fp64 reference and the emulation stay fast
#: bytes per token, d_qk and the `kv_format` hint of each legacy cache
LAYOUTS = {656: (576, "V32"), 584: (512, "V4")}


# -- the emulation ---------------------------------------------------------------------

def _view(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return raw.contiguous().view(dtype)


def dequantise(cache: torch.Tensor, token: torch.Tensor, sm90: bool = False) -> torch.Tensor:
    """Tokens `token` (flat `page * P + row`, any shape, each valid) of a FlashMLA FP8 cache
    `[N, P, 1, bytes]` (any block stride) as float32 `[*token.shape, d_qk]`, read by
    FlashMLA's documented layout."""
    n, page, _, width = cache.shape
    stride = cache.stride(0)
    assert cache.stride(1) == width, "a page must be contiguous (stride(1) == bytes)"
    blocks = torch.as_strided(cache, (n, page * width), (stride, 1))
    blk, row = token // page, token % page
    if width == 656:  # V3.2: per token 512 e4m3, 4 fp32 scales (one per 128), 64 bf16 RoPE
        tok = blocks[blk[..., None], row[..., None] * 656 + torch.arange(656)]
        nope = _view(tok[..., :512], torch.float8_e4m3fn).float()
        scale = _view(tok[..., 512:528], torch.float32)
        if sm90:
            scale = scale.bfloat16().float()
        rope = _view(tok[..., 528:656], torch.bfloat16).float()
        rows = torch.cat([nope * scale.repeat_interleave(128, dim=-1), rope], dim=-1)
        return rows.bfloat16().float() if sm90 else rows
    # V4 "MODEL1": per block, every token's 448 e4m3 + 64 bf16 RoPE, then every token's
    # 7 UE8M0 scales (one per 64) and 1 pad byte
    data = blocks[blk[..., None], row[..., None] * 576 + torch.arange(576)]
    scales = blocks[blk[..., None], page * 576 + row[..., None] * 8 + torch.arange(7)]
    scale = torch.where(scales == 0xFF, float("nan"), torch.exp2(scales.float() - 127.0))
    nope = _view(data[..., :448], torch.float8_e4m3fn).float()
    rope = _view(data[..., 448:576], torch.bfloat16).float()
    rows = torch.cat([nope * scale.repeat_interleave(64, dim=-1), rope], dim=-1)
    return rows.bfloat16().float() if sm90 else rows


def _gather(cache, indices, sm90):
    """Rows `[b, s_q, topk, d]` of the valid indices (zeros elsewhere) and the valid mask."""
    n, page = cache.shape[:2]
    idx = indices.to(torch.int64)
    ok = idx != -1
    bad = ok & ((idx < 0) | (idx >= n * page))
    assert not bool(bad.any()), "an index other than -1 outside the cache: illegal address"
    rows = dequantise(cache, torch.where(ok, idx, 0), sm90)
    return torch.where(ok[..., None], rows, 0.0), ok


def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v,
                           tile_scheduler_metadata, num_splits=None, softmax_scale=None,
                           causal=False, is_fp8_kvcache=None, indices=None, attn_sink=None,
                           extra_k_cache=None, extra_indices_in_kvcache=None, topk_length=None,
                           extra_topk_length=None, enable_batch_invariant=False,
                           use_legacy=False, kv_format=None, sm90=False):
    """An emulation of the wheel's sparse FP8 decode (module docstring)."""
    assert isinstance(tile_scheduler_metadata, dict) and num_splits is None
    assert indices is not None and not causal and is_fp8_kvcache
    assert use_legacy, "the V3.2 and V4 caches are legacy-only in sgl-flash-mla 1.0.0"
    assert topk_length is None and extra_topk_length is None  # the adapter passes none
    b, s_q, h_q, d_qk = q.shape
    assert q.dtype == torch.bfloat16 and q.stride(-1) == 1
    assert h_q in (64, 128), f"h_q must be 64 or 128, got {h_q}"
    assert head_dim_v == 512
    width = k_cache.shape[-1]
    assert k_cache.dim() == 4 and k_cache.shape[2] == 1 and k_cache.dtype == torch.uint8
    assert width in LAYOUTS and LAYOUTS[width] == (d_qk, kv_format), (width, d_qk, kv_format)
    assert k_cache.shape[1] == 64, "page_block_size 64"
    if width == 584:
        assert k_cache.stride(0) % 576 == 0, "k_cache.stride(0) must be a multiple of 576"
    assert indices.dtype == torch.int32 and tuple(indices.shape[:2]) == (b, s_q)
    assert indices.shape[-1] % 64 == 0, "topk mod B_TOPK (64) must be 0"
    assert attn_sink is None or (attn_sink.dtype == torch.float32
                                 and tuple(attn_sink.shape) == (h_q,))
    rows, ok = _gather(k_cache, indices, sm90)
    if extra_k_cache is not None:
        assert width != 656, "V3.2 does not support extra KV cache"
        assert extra_k_cache.shape[-1] == width and extra_k_cache.shape[1] == 64
        assert extra_k_cache.stride(0) % 576 == 0
        e = extra_indices_in_kvcache
        assert e.dtype == torch.int32 and tuple(e.shape[:2]) == (b, s_q)
        assert e.shape[-1] % 128 == 0
        erows, eok = _gather(extra_k_cache, e, sm90)
        rows, ok = torch.cat([rows, erows], dim=2), torch.cat([ok, eok], dim=2)
    else:
        assert extra_indices_in_kvcache is None
    scale = softmax_scale if softmax_scale is not None else d_qk ** -0.5
    logits = torch.einsum("bshd,bskd->bshk", q.float(), rows) * scale
    logits = torch.where(ok[:, :, None, :], logits, float("-inf"))
    empty = ~ok.any(dim=-1)[:, :, None].expand(b, s_q, h_q)
    # an online softmax: running max m, row sum l, o = sum_j p_j v_j / l, lse = m + log l
    m = torch.where(empty, 0.0, logits.amax(dim=-1))
    p = torch.where(ok[:, :, None, :], torch.exp(logits - m[..., None]), 0.0)
    denom = p.sum(dim=-1)
    out = torch.einsum("bshk,bskd->bshd", p, rows[..., :head_dim_v])
    out = out / torch.where(empty, 1.0, denom)[..., None]
    lse = torch.where(empty, float("inf"), m + torch.log(denom))
    if attn_sink is not None:
        factor = torch.sigmoid(lse - attn_sink.float())
        out = out * torch.where(empty, 0.0, factor)[..., None]
    out = torch.where(empty[..., None], 0.0, out)
    return out.bfloat16(), lse.transpose(1, 2)  # lse [b, h_q, s_q], a transposed view


def standin(sm90: bool = False) -> types.ModuleType:
    """A stand-in `flash_mla` module: the two entry points the adapter calls."""
    mod = types.ModuleType("flash_mla_standin")
    mod.get_mla_metadata = lambda *a, **k: ({}, None)

    def fwd(**kw):
        return flash_mla_with_kvcache(**kw, sm90=sm90)

    mod.flash_mla_with_kvcache = fwd
    return mod


@pytest.fixture
def on_cpu(monkeypatch):
    """Point the adapters at the emulation on the CPU (and draws at smoke's small budget, so
    that the CPU emulation stays fast); returns a setter for its model."""
    def use(sm90=False):
        monkeypatch.setattr(flashmla_fp8, "_probe", lambda: (None, standin(sm90)))
    monkeypatch.setattr(flashmla_fp8, "DEVICE", "cpu")
    monkeypatch.setattr(profiles, "budget", lambda: SMALL_BUDGET)
    use()
    return use


# -- declarations ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_declarations(name):
    k = KernelUnderTest.of(f"kernels.adapters.flashmla_fp8:{name}", ADAPTERS[name])
    fmt = "fp8_ds_mla" if name.endswith("v32") else "fp8_ds_v4"
    assert k.convention == "v2" and k.kv_formats == (fmt,)
    assert k.lse == flashmla_fp8.LSE_DECL
    assert k.lse.base == "e" and not k.lse.with_sink and k.lse.empty == float("inf")
    assert k.pre.dims == {"H": (64, 128), "D": (576 if fmt == "fp8_ds_mla" else 512,),
                          "BLOCK": (64,)}
    assert "FlashMLA" in k.pre.note


def test_unavailable_here_says_why():
    flashmla_fp8._probe.cache_clear()
    reason = flashmla_fp8.available()
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert reason is not None and "no CUDA GPU" in reason
    with pytest.raises(flashmla_fp8.FlashMLAUnavailable):
        flashmla_fp8.sparse_attn_v4(**_fixed_call())


def test_cache_keeps_every_block_byte_and_pads_the_stride():
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (2, 64, 584), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 64, 584), generator=g, dtype=torch.uint8)
    cache = flashmla_fp8.kv_cache([a, b], "fp8_ds_v4")
    assert cache.shape == (5, 64, 1, 584) and cache.stride(0) % 576 == 0
    assert cache.stride()[1:] == (584, 584, 1)
    blocks = torch.as_strided(cache, (5, 64 * 584), (cache.stride(0), 1))
    assert torch.equal(blocks, torch.cat([a, b]).reshape(5, -1))
    moved = flashmla_fp8._to_device_cache(cache, torch.device("cpu"))
    assert moved.stride() == cache.stride()
    assert torch.equal(torch.as_strided(moved, (5, 64 * 584), (cache.stride(0), 1)), blocks)


# -- the adapters against the reference, on drawn cases --------------------------------

def _check(name, inputs, out, lse):
    gold = golden(inputs)
    res = compare(out, gold, tolerance(inputs, gold), dims=("t", "h"))
    assert res.ok, f"{name}: {res.message}"
    res = compare_lse(lse, inputs.attended(), flashmla_fp8.LSE_DECL)
    assert res.ok, f"{name}: {res.message}"


@pytest.mark.parametrize("name", ["sparse_attn_v32", "sparse_attn_v4"])
def test_adapter_and_emulation_match_the_reference(name, on_cpu):
    fn = ADAPTERS[name]
    kernel = KernelUnderTest.of(f"kernels.adapters.flashmla_fp8:{name}", fn)

    @settings(max_examples=4, deadline=None, database=None,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate])  # no shrinking: a failure prints its draw
    @given(data=st.data())
    def check(data):
        case = draw_case(data, kernel, edge=None)  # edge cases (2^16 blocks) are slow on CPU
        inputs = case.inputs
        out, lse = fn(**inputs.kwargs())
        assert out.shape == (inputs.T, inputs.H, 512) and lse.shape == (inputs.T, inputs.H)
        _check(name, inputs, out, lse)

    check()


def _fixed_call(H=64, fmt="fp8_ds_v4", seed=0):
    """A small v2 call by hand: 2 batches x 2 tokens, BLOCK 64, some empty lanes, one token
    with nothing live (its window empty, its compressed ids past the cut)."""
    from sparse_attn_conformance.contracts import formats
    from sparse_attn_conformance.strategies.formats import quantise

    g = torch.Generator().manual_seed(seed)
    F = formats.FORMATS[fmt]
    B, S, IDX, BLOCK, r = 2, 2, 3, 64, 4  # WIN = 4
    T = B * S

    def pool(n):
        rows = (torch.randn(n, BLOCK, F.D, generator=g) * 0.5).bfloat16()
        return formats.to_pool(fmt, quantise(F, rows, power_of_two=fmt == "fp8_ds_v4"))

    win = torch.tensor([[0, 1, 2, -1], [64, 65, -1, 3], [-1, -1, -1, -1], [130, 131, 132, 133]],
                       dtype=torch.int32)
    pos = torch.tensor([[9], [10], [2], [17]], dtype=torch.int32)
    idx = torch.tensor([[0, 1, 2, -1], [2, 0, 5, 0], [0, 1, -1, 0], [3, 4, 1, 2]],
                       dtype=torch.int32)
    return dict(q=torch.randn(T, H, F.D, generator=g).bfloat16(), ori_kv=pool(3),
                window_swa_indices=win, cmp_kv=pool(2),
                cmp_block_table=torch.tensor([[1, 0], [0, 1]], dtype=torch.int32),
                idx_topk=idx, position_ids=pos, attn_sink=torch.randn(H, generator=g),
                softmax_scale=F.D ** -0.5, seq_per_batch=S, index_topk=IDX, compress_ratio=r)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_fixed_call_with_an_empty_token(name, on_cpu):
    fmt = "fp8_ds_mla" if name.endswith("v32") else "fp8_ds_v4"
    kw = _fixed_call(H=128, fmt=fmt)
    inputs = v2.validate(**kw)
    live_w, live_c = v2.live_lanes(inputs)
    assert not bool(live_w[2].any() or live_c[2].any())  # token 2 attends nothing
    out, lse = ADAPTERS[name](**kw)
    assert bool((out[2] == 0).all()) and bool((lse[2] == float("inf")).all())
    _check(name, inputs, out, lse)


def test_translation_marks_exactly_the_dead_lanes_invalid():
    inputs = v2.validate(**_fixed_call())
    t = flashmla_fp8.translate(inputs, two_caches=False)
    live_w, live_c = v2.live_lanes(inputs)
    live = torch.cat([live_w, live_c], dim=1)
    idx = t.indices[:, 0]
    assert idx.shape[1] % flashmla_fp8.TOPK_ALIGN == 0 and t.extra_indices is None
    assert torch.equal(idx[:, :live.shape[1]] >= 0, live)
    assert bool((idx[:, live.shape[1]:] == -1).all())
    assert bool((idx[~torch.cat([live, torch.zeros_like(idx[:, live.shape[1]:], dtype=torch.bool)],
                               dim=1)] == -1).all())
    n_ori = inputs.ori_kv.shape[0] * inputs.BLOCK
    assert bool((idx[:, live_w.shape[1]:][idx[:, live_w.shape[1]:] >= 0] >= n_ori).all())
