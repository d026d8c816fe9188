"""Property 8: a row's dequantised value is what the reference sees (docs/contract.md
section 12): each e4m3 code times its own group's scale, the RoPE tail as stored, in the
kernel too.

- With `q = 0` and every sink at `-inf` (or the case's sinks, for a kernel that declares
  finite sinks only) every live logit is 0, so `o = sum_j v_j / (n + exp(sink))`: the
  mean of the live rows' values, computed here from `contracts.formats`' decode of the
  pools' records, without any softmax (`attention.reference` is not used).
- With one live lane per token (the others rewritten to ignored values) and sinks at
  `-inf`, the softmax of a single key is 1 whatever the query: `o = v_j` exactly. This
  checks the value side for a non-zero query; a key read with the wrong group's scale
  only moves the logits, and is caught by test_reference_match.

A per-tensor FP8 pool's value is its codes times its scale argument (`ori_kv_scale`,
`cmp_kv_scale`): a kernel that drops the scale, or reads one pool with the other's, fails
both.

For a kernel that reads bf16 pools only there is nothing to dequantise: one visible skip.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call, example, expect_matches
from sparse_attn_conformance.contracts import formats, v1, v2


def _fp8_formats(kernel) -> tuple[str, ...]:
    fp8 = tuple(f for f in kernel.kv_formats if f != formats.BF16)
    if not fp8:
        pytest.skip(f"not exercised: no FP8 format is under test ({kernel.name} reads "
                    f"{', '.join(kernel.kv_formats)}; --kv-format names the formats)")
    return fp8


def _draw_fp8_case(data, kernel, fp8: tuple[str, ...], **kw):
    name = fp8[0] if len(fp8) == 1 else data.draw(st.sampled_from(fp8), label="fp8 format")
    case = draw_case(data, kernel, kv_format=name, **kw)
    assert case.kv_format == name != formats.BF16
    return case


def _pool_values(i, pool: str) -> torch.Tensor:
    """Every row's value `[N * BLOCK, D_v]` float64 of pool `pool` of call `i`, flat row
    `n * BLOCK + r`, decoded from the pool's records (a per-tensor pool's codes times its
    scale argument)."""
    return formats.pool_values(getattr(i, pool), i.pool_scale(pool))


def lane_values(i) -> tuple[torch.Tensor, torch.Tensor]:
    """Every lane's value `[*tokens, L, D_v]` float64 (zero where not live) and the live
    mask `[*tokens, L]`, each lane's row found by the convention's addressing (sections 1-3,
    8-9) and its value by decoding its record."""
    block = i.BLOCK
    ori, cmp = _pool_values(i, "ori_kv"), _pool_values(i, "cmp_kv")
    if i.CONVENTION == "v2":
        live_w, live_c = v2.live_lanes(i)
        w = torch.where(live_w, i.window_swa_indices.to(torch.int64), 0)
        c = torch.where(live_c, i.idx_topk[:, :i.index_topk].to(torch.int64), 0)
        b = (torch.arange(i.T) // i.seq_per_batch)[:, None].expand_as(c)
        blk = i.cmp_block_table.to(torch.int64)[b, c // block]
        flat_c = torch.where(live_c, blk * block + c % block, 0)
        rows = torch.cat([ori[w], cmp[flat_c]], dim=1)
        live = torch.cat([live_w, live_c], dim=1)
    else:
        win = i.window_size
        live = v1.live_mask(i.topk_idxs, i.seqused_kv, win)
        e = torch.where(live, i.topk_idxs.to(torch.int64), 0)
        is_cmp = e >= win
        slot = torch.where(is_cmp, e - win, e)
        b = torch.arange(i.B)[:, None, None].expand_as(e)
        ori_cols, cmp_cols = i.ori_block_table.shape[1], i.cmp_block_table.shape[1]
        ori_blk = i.ori_block_table.to(torch.int64)[b, (slot // block).clamp(max=ori_cols - 1)]
        cmp_blk = i.cmp_block_table.to(torch.int64)[b, (slot // block).clamp(max=cmp_cols - 1)]
        from_ori = ori[torch.where(live & ~is_cmp, ori_blk * block + slot % block, 0)]
        from_cmp = cmp[torch.where(live & is_cmp, cmp_blk * block + slot % block, 0)]
        rows = torch.where(is_cmp[..., None], from_cmp, from_ori)
    rows = torch.where(live[..., None], rows, torch.zeros((), dtype=rows.dtype))
    return rows, live


@given(data=st.data())
def test_zero_query_gives_the_mean_of_the_dequantised_rows(kernel, data):
    fp8 = _fp8_formats(kernel)
    case = _draw_fp8_case(data, kernel, fp8)
    with example(case, kernel, transform="q set to 0, every attn_sink to -inf (unless the "
                                         "kernel declares finite sinks)"):
        H = case.inputs.H
        sink = case.inputs.attn_sink if kernel.pre.finite_sinks \
            else torch.full((H,), float("-inf"))
        i = case.inputs.replace(q=torch.zeros_like(case.inputs.q), attn_sink=sink)
        v, live = lane_values(i)
        n = live.sum(dim=-1).double()[..., None, None]
        total = v.sum(dim=-2)[..., None, :]
        e_sink = torch.exp(sink.double())[:, None]
        closed = torch.where(n > 0, total / (n + e_sink), 0.0).expand(*n.shape[:-2], H, -1)
        expect_matches(call(kernel, i), i, expected=closed,
                       against="the mean of the dequantised rows")


def _one_lane_v2(i):
    live_w, live_c = v2.live_lanes(i)
    live = torch.cat([live_w, live_c], dim=1)
    first = torch.where(live.any(dim=1), live.to(torch.int8).argmax(dim=1), -1)
    lane = torch.arange(live.shape[1])[None, :]
    keep = lane == first[:, None]
    win_n = i.WIN
    w = torch.where(keep[:, :win_n], i.window_swa_indices, -1)
    idx = torch.full_like(i.idx_topk, -1)
    idx[:, :i.index_topk] = torch.where(keep[:, win_n:], i.idx_topk[:, :i.index_topk], -1)
    return i.replace(window_swa_indices=w.to(torch.int32), idx_topk=idx.to(torch.int32))


def _one_lane_v1(i):
    live = v1.live_mask(i.topk_idxs, i.seqused_kv, i.window_size)
    first = torch.where(live.any(dim=-1), live.to(torch.int8).argmax(dim=-1), -1)
    keep = torch.arange(live.shape[-1]) == first[..., None]
    return i.replace(topk_idxs=torch.where(keep, i.topk_idxs, -1).to(torch.int32))


@given(data=st.data())
def test_one_live_lane_returns_its_dequantised_value(kernel, data):
    fp8 = _fp8_formats(kernel)
    if kernel.pre.finite_sinks:
        pytest.skip(f"not exercised: {kernel.name} declares finite sinks only")
    if kernel.pre.canonical_rows or kernel.pre.canonical_windows:
        pytest.skip(f"not exercised: {kernel.name} declares model-written lanes only "
                    f"(one live lane per token is not one)")
    case = _draw_fp8_case(data, kernel, fp8)
    with example(case, kernel, transform="every attn_sink set to -inf; each token's lanes "
                                         "but its first live one rewritten to ignored values"):
        i = case.inputs.replace(attn_sink=torch.full((case.inputs.H,), float("-inf")))
        i = _one_lane_v2(i) if i.CONVENTION == "v2" else _one_lane_v1(i)
        v, live = lane_values(i)
        assert bool((live.sum(dim=-1) <= 1).all()), "at most one live lane per token"
        value = v.sum(dim=-2)[..., None, :].expand(*v.shape[:-2], i.H, -1)
        expect_matches(call(kernel, i), i, expected=value,
                       against="the dequantised value of the token's one live row")
