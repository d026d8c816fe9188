"""The FlashMLA adapter's translation (kernels/adapters/flashmla.py), checked on CPU.

No GPU and no FlashMLA here: `emulate_sparse_fwd` below is an EMULATION of
`flash_mla.flash_mla_sparse_fwd` in torch, used only in this file. With `model="docs"` it
follows FlashMLA's documented semantics (the wheel's docstring and upstream's
`tests/ref.py`); with `model="sm90"` it sketches what the SM90 kernel's source
(`csrc/sm90/prefill/sparse/phase1.cuh`) computes, to predict what the GPU run will find.
`emulate(translate(inputs))` is compared with the reference at the suite's tolerance, and
the places where FlashMLA differs from the contract are shown one by one
(docs/findings/flashmla.md lists them).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.contracts.v1 import Inputs, gather_rows, live_mask, validate
from sparse_attn_conformance.kernels import registry
from sparse_attn_conformance.kernels.adapters import flashmla
from sparse_attn_conformance.kernels.adapters.flashmla import TOPK_ALIGN, flat_rows, translate
from sparse_attn_conformance.strategies.v1.cases import cases

LOG2_E = 1.4426950408889634
#: the SM90 kernel's initial running max, in log2 units (`MAX_INIT_VAL` in its config.h)
MAX_INIT_VAL = -1e30
H, D = 64, 512


# -- the emulation ---------------------------------------------------------------------

def check_api(q, kv, indices, d_v, attn_sink, topk_length):
    """The shape and dtype checks `flash_mla_sparse_fwd` makes (its extension's asserts)."""
    s_q, h_q, d_qk = q.shape
    s_kv, h_kv, _ = kv.shape
    assert q.dtype == kv.dtype == torch.bfloat16 and indices.dtype == torch.int32
    assert h_q in (64, 128), f"h_q must be 64 or 128, got {h_q}"
    assert d_qk in (512, 576) and d_v == 512, (d_qk, d_v)
    assert h_kv == 1 and tuple(kv.shape) == (s_kv, 1, d_qk)
    assert indices.dim() == 3 and indices.shape[:2] == (s_q, 1)
    topk = indices.shape[-1]
    assert topk > 0 and topk % 128 == 0, f"SM90: topk % (2*B_TOPK) == 0, got topk={topk}"
    assert attn_sink is None or (attn_sink.dtype == torch.float32
                                 and tuple(attn_sink.shape) == (h_q,))
    assert topk_length is None or (topk_length.dtype == torch.int32
                                   and tuple(topk_length.shape) == (s_q,))


def emulate_sparse_fwd(q, kv, indices, sm_scale, d_v=512, attn_sink=None, topk_length=None,
                       model="docs", nan_caveat=True):
    """An emulation of `flash_mla_sparse_fwd(...)[0]`: `[s_q, h_q, d_v]`, bf16 values in fp32.

    model="docs": the documented semantics. An index `< 0` or `>= s_kv`, or at a position
        `>= topk_length[i]`, is ignored; `o = softmax(sm_scale * q k^T) v` over the rest,
        times `exp(lse) / (exp(lse) + exp(attn_sink))` (`+inf` sink: 0, `-inf`: no effect);
        a token with nothing valid gives 0 (tests/ref.py). In fp32 with the max shift. `nan_caveat`: the documented
        exception, "topk_length provided, a valid index past topk_length[i] points to a k
        token containing NaN: the output will contain NaN", taken at its worst.
    model="sm90": a sketch of the SM90 kernel's arithmetic, from its source: entries in the
        64-entry blocks it walks (two per step, `ceil(topk_length/64)` rounded up to even),
        invalid ones zero-filled and their raw logit set to -inf BEFORE the scale is
        applied; the running max taken on raw logits, then scaled, floored at MAX_INIT_VAL;
        exponents `exp2(raw * scale*log2(e) - max)` as one fused multiply-add; bf16
        probabilities into the value product; `1 / (L + exp2(sink*log2(e) - max))`, 0 where
        `L == 0`; bf16 output. One global max instead of the per-block online one: the
        same failure modes, not the same bits.
    """
    check_api(q, kv, indices, d_v, attn_sink, topk_length)
    s_q, h_q, _ = q.shape
    s_kv, topk = kv.shape[0], indices.shape[-1]
    idx = indices[:, 0, :].to(torch.int64)
    pos = torch.arange(topk)
    in_len = (pos[None, :] < topk_length.to(torch.int64)[:, None] if topk_length is not None
              else torch.ones(s_q, topk, dtype=torch.bool))
    in_range = (idx >= 0) & (idx < s_kv)
    valid = in_range & in_len
    raw_rows = kv[idx.clamp(0, s_kv - 1), 0]                       # [s_q, topk, d_qk]
    rows = torch.where(valid[..., None], raw_rows, torch.zeros((), dtype=kv.dtype))
    if model == "docs":
        # evaluated with the max shift (tests/ref.py's exp(z - logsumexp) in fp32 loses the
        # sum's ln(k) next to logits near 2^120: the same formula, less precision)
        z = torch.einsum("shd,std->sht", q.float(), rows.float()) * sm_scale
        z = torch.where(valid[:, None, :], z, float("-inf"))
        empty = ~valid.any(dim=-1)[:, None, None]
        m = torch.where(empty, 0.0, z.amax(dim=-1, keepdim=True))
        p = torch.where(valid[:, None, :], torch.exp(z - m), 0.0)
        sink = (attn_sink if attn_sink is not None else torch.full((h_q,), float("-inf")))
        denom = p.sum(dim=-1, keepdim=True) + torch.exp(sink[None, :, None] - m)
        out = torch.einsum("sht,std->shd", p, rows[..., :d_v].float()) / denom
        out = torch.where(empty, 0.0, out)                   # nothing valid: o = 0
        if nan_caveat and topk_length is not None:
            beyond = in_range & ~in_len & torch.isnan(raw_rows.float()).any(dim=-1)
            out = torch.where(beyond.any(dim=-1)[:, None, None], float("nan"), out)
        return out.to(torch.bfloat16).float()
    if model != "sm90":
        raise ValueError(f"model: expected 'docs' or 'sm90', got {model!r}")
    n = topk_length.to(torch.int64) if topk_length is not None else torch.full((s_q,), topk)
    n_blocks = -(-n // 64)                                   # ceil(topk_length / 64)
    walked = pos[None, :] < (-(-n_blocks // 2) * 128)[:, None]  # whole pairs of blocks
    raw = torch.einsum("shd,std->sht", q.double(), rows.double()).float()
    raw = torch.where(valid[:, None, :], raw, float("-inf"))
    raw = torch.where(walked[:, None, :], raw, float("nan"))           # never seen
    scale = torch.tensor(sm_scale, dtype=torch.float32) * torch.tensor(LOG2_E, dtype=torch.float32)
    cur_max = torch.where(walked[:, None, :], raw, float("-inf")).amax(dim=-1) * scale
    m = torch.clamp(cur_max, min=MAX_INIT_VAL)                         # max(MAX_INIT, .)
    m = torch.where(torch.isnan(cur_max), cur_max, m)
    expo = (raw.double() * scale.double() - m.double()[..., None]).float()  # one FFMA
    p = torch.where(walked[:, None, :], torch.exp2(expo), torch.zeros(()))
    total = p.sum(dim=-1)
    o = torch.einsum("sht,std->shd", p.to(torch.bfloat16).double(),
                     rows[..., :d_v].double()).float()
    sink = (attn_sink if attn_sink is not None else torch.full((h_q,), float("-inf")))
    sink2 = sink.float() * torch.tensor(LOG2_E, dtype=torch.float32)
    factor = 1.0 / (total + torch.exp2(sink2[None, :] - m))
    factor = torch.where(total == 0, torch.zeros(()), factor)
    return (o * factor[..., None]).to(torch.bfloat16).float()


def emulate(inputs: Inputs, model: str = "docs", **options) -> torch.Tensor:
    """`o [B, S, H, D]` of the adapter with the emulation in place of the kernel."""
    t = translate(inputs, **options)
    out = emulate_sparse_fwd(t.q, t.kv, t.indices, t.scale, attn_sink=t.attn_sink,
                             topk_length=t.topk_length, model=model)
    return out.reshape(inputs.B, inputs.S, inputs.H, inputs.D)


def check_matches(inputs: Inputs, out: torch.Tensor) -> float:
    gold = golden(inputs)
    result = compare(out, gold, tolerance(inputs, gold), "emulated FlashMLA")
    assert result.ok, result.message
    return result.worst_ratio


# -- hand-built calls --------------------------------------------------------------------

def make_inputs(rows, seqused, *, win=4, block=4, n_ori=2, n_cmp=3, S=None, ori_table=None,
                cmp_table=None, sink=None, scale=D**-0.5, seed=0, kv_scale=1.0,
                q_scale=1.0) -> Inputs:
    """A call with H=64, D=512: `rows` `[B][S][TOPK]`, pools of random rows."""
    gen = torch.Generator().manual_seed(seed)
    topk_idxs = torch.tensor(rows, dtype=torch.int32)
    B, S_ = topk_idxs.shape[:2]
    assert S is None or S == S_
    if ori_table is None:
        ori_table = [[i % n_ori for i in range(-(-win // block))] for _ in range(B)]
    if cmp_table is None:
        cmp_table = [[(b + i) % n_cmp for i in range(2)] for b in range(B)]
    kw = dict(
        q=(torch.randn(B, S_, H, D, generator=gen) * q_scale).to(torch.bfloat16),
        ori_kv=(torch.randn(n_ori, block, D, generator=gen) * kv_scale).to(torch.bfloat16),
        ori_block_table=torch.tensor(ori_table, dtype=torch.int32),
        cmp_kv=(torch.randn(n_cmp, block, D, generator=gen) * kv_scale).to(torch.bfloat16),
        cmp_block_table=torch.tensor(cmp_table, dtype=torch.int32),
        topk_idxs=topk_idxs,
        attn_sink=(torch.tensor(sink, dtype=torch.float32) if sink is not None
                   else torch.randn(H, generator=gen)),
        seqused_kv=torch.tensor(seqused, dtype=torch.int32),
        softmax_scale=scale, window_size=win)
    return validate(**kw)


def sinks(*values) -> list[float]:
    """`H` sink values cycling through `values`."""
    return [values[h % len(values)] for h in range(H)]


# -- the translation --------------------------------------------------------------------

def check_translation(inputs: Inputs) -> None:
    """Every structural promise of `translate`, against the reference's own gather."""
    t = translate(inputs)
    B, S, topk = inputs.B, inputs.S, inputs.TOPK
    T = B * S
    n_rows = (inputs.ori_kv.shape[0] + inputs.cmp_kv.shape[0]) * inputs.BLOCK
    assert t.q.shape == (T, inputs.H, inputs.D) and t.q.is_contiguous()
    assert torch.equal(t.q.view(B, S, inputs.H, inputs.D), inputs.q)     # t = b*S + s
    assert t.kv.shape == (n_rows, 1, inputs.D) and t.kv.is_contiguous()
    assert t.indices.shape[:2] == (T, 1) and t.indices.dtype == torch.int32
    padded = t.indices.shape[-1]
    assert padded % TOPK_ALIGN == 0 and topk <= padded < topk + TOPK_ALIGN
    assert bool((t.indices[..., topk:] == -1).all())                        # -1 padding
    assert bool(((t.indices >= -1) & (t.indices < n_rows)).all())

    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, inputs.window_size).reshape(T, topk)
    assert torch.equal(t.topk_length, live.sum(dim=-1).to(torch.int32))
    ref_rows, _ = gather_rows(inputs)
    ref_rows = ref_rows.reshape(T, topk, inputs.D)
    addr = flat_rows(inputs).reshape(T, topk)
    for tok in range(T):
        n = int(t.topk_length[tok])
        idx = t.indices[tok, 0, :topk].to(torch.int64)
        # live first, in index-row order, each addressing exactly the reference's row
        assert bool((idx[:n] >= 0).all())
        assert torch.equal(t.kv[idx[:n], 0], ref_rows[tok][live[tok]])
        # then the dead ones in index-row order, at their own address or -1
        assert torch.equal(idx[n:], addr[tok][~live[tok]])


@settings(max_examples=16, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases(flashmla.PRECONDITIONS, budget=2**21))
def test_drawn_cases_translate_and_match_the_reference(case):
    """Drawn calls (H 64/128, D 512, any rows, tables, values, layouts): the translation
    keeps its promises, and the documented semantics on it give the contract's output."""
    inputs = validate(**case.inputs.kwargs())  # as the kernel receives them (layouts too)
    check_translation(inputs)
    check_matches(case.inputs, emulate(inputs))
    check_matches(case.inputs, emulate(inputs, dead="invalid", topk_length=False))
    # The SM90 sketch agrees where the source predicts no trouble: a positive scale and
    # logits of moderate size (see test_sm90_* for the rest).
    z = case.inputs.softmax_scale * torch.einsum(
        "bshd,bstd->bsht", case.inputs.q.double(), gather_rows(case.inputs)[0].double())
    if case.inputs.softmax_scale > 0 and float(z.abs().max()) < 2**12:
        check_matches(case.inputs, emulate(inputs, model="sm90"))


MODEL_SHAPE = {"B": 64, "S": 2, "H": 64, "D": 512, "WIN": 128, "IDX_TOPK": 512, "BLOCK": 128}


@settings(max_examples=1, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases(flashmla.PRECONDITIONS, fixed=MODEL_SHAPE, budget=2**26))
def test_model_shape_translates_and_matches(case):
    """One call at the model's shape (the benchmark's), through the same checks."""
    inputs = validate(**case.inputs.kwargs())
    check_translation(inputs)
    assert translate(inputs).indices.shape == (128, 1, 640)
    check_matches(case.inputs, emulate(inputs))


def test_garbage_tables_and_unaddressable_entries_give_minus_one():
    """Entries through garbage block-table entries (unused columns), columns past the
    table and negative entries address nothing (-1); a dead compressed entry whose column
    is in use keeps its row."""
    I32_MIN, I32_MAX = -2**31, 2**31 - 1
    win = block = 4
    # seq_used 6: window_valid 4, cmp_valid 2 (cmp column 0 in use; columns 1, 2 garbage)
    rows = [[[0, 2, win + 1, 3,          # live: window 0, 2, compressed slot 1, window 3
              -1,                        # dead: -1
              win + 4,                   # dead: compressed slot 4, column 1 = INT32_MIN
              win + 9,                   # dead: slot 9, column 2 = INT32_MAX
              win + 13,                  # dead: slot 13, column 3, past the 3-column table
              win + 3,                   # dead: slot 3 >= cmp_valid, column 0 = block 2
              I32_MAX]]]                 # dead: a column far past the table
    inputs = make_inputs(rows, seqused=[6], win=win, block=block, n_ori=2, n_cmp=3,
                         ori_table=[[1]], cmp_table=[[2, I32_MIN, I32_MAX]])
    t = translate(inputs)
    cmp0 = 2 * block                     # the compressed pool follows 2 window blocks
    live = [1 * block + 0, 1 * block + 2, cmp0 + 2 * block + 1, 1 * block + 3]
    dead = [-1, -1, -1, -1, cmp0 + 2 * block + 3, -1]
    assert t.topk_length.tolist() == [4]
    assert t.indices[0, 0].tolist() == live + dead + [-1] * (TOPK_ALIGN - 10)
    check_matches(inputs, emulate(inputs))
    check_matches(inputs, emulate(inputs, model="sm90"))


def test_dead_entries_point_at_real_rows_when_addressable():
    """A dead window entry (slot >= window_valid) and a dead compressed entry (slot >=
    cmp_valid, column in the table) keep their rows: a kernel reading past topk_length
    reads them."""
    rows = [[[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6]]]
    # S=2, seqused 5: token 0 seq_used 4 (window_valid 4, cmp_valid 0), token 1: 4 and 1
    inputs = make_inputs(rows, seqused=[5], win=4, ori_table=[[1]], cmp_table=[[2, 0]])
    t = translate(inputs)
    assert t.topk_length.tolist() == [4, 5]
    w = [4, 5, 6, 7]                      # window block 1
    c = [8 + 2 * 4 + k for k in range(3)]  # compressed block 2, slots 0..2
    assert t.indices[0, 0, :7].tolist() == [*w, *c]   # token 0: all compressed dead
    assert t.indices[1, 0, :7].tolist() == [*w, *c]   # token 1: slot 0 live, 1, 2 dead
    check_matches(inputs, emulate(inputs))


def test_live_entries_first_in_row_order():
    rows = [[[-1, 6, 0, 99, 1, 4, -7, 3]]]
    inputs = make_inputs(rows, seqused=[6], win=4, ori_table=[[0]], cmp_table=[[1, 2]])
    # window_valid 4, cmp_valid 2: live are 0, 1, 3 (window) and 4 (compressed slot 0)
    t = translate(inputs)
    live_rows = [0, 1, 8 + 4 + 0, 3]   # in index-row order
    assert t.topk_length.tolist() == [4]
    assert t.indices[0, 0, :4].tolist() == live_rows
    # dead in row order: -1, 6 (compressed slot 2: block 1, row 2), 99 (col 23: -1), -7
    assert t.indices[0, 0, 4:8].tolist() == [-1, 8 + 4 + 2, -1, -1]
    assert t.indices.shape[-1] == TOPK_ALIGN
    check_matches(inputs, emulate(inputs))


def test_padding_to_a_multiple_of_128():
    for topk in (1, 127, 128, 129, 300):
        win = min(topk, 4)
        inputs = make_inputs([[[0] * topk]], seqused=[1], win=win)
        padded = translate(inputs).indices.shape[-1]
        assert padded == -(-topk // 128) * 128, (topk, padded)


def test_duplicates_count_twice():
    rows = [[[2, 2, 2, 0, 4, 4]]]
    inputs = make_inputs(rows, seqused=[6], win=4, sink=sinks(-math.inf, 0.0, 3.0))
    t = translate(inputs)
    assert t.topk_length.tolist() == [6]
    check_matches(inputs, emulate(inputs))
    check_matches(inputs, emulate(inputs, model="sm90"))


def test_the_pools_last_row():
    """An entry addressing the compressed pool's last row is the flat KV's last row, and
    valid (< s_kv) for the kernel."""
    n_cmp, block, win = 3, 4, 4
    rows = [[[0, 1, 2, win + 2 * block - 1]]]   # compressed slot 7: column 1, row 3
    inputs = make_inputs(rows, seqused=[win + 2 * block], win=win, block=block, n_cmp=n_cmp,
                         cmp_table=[[0, n_cmp - 1]])
    t = translate(inputs)
    s_kv = t.kv.shape[0]
    assert t.indices[0, 0, 3].item() == s_kv - 1
    assert torch.equal(t.kv[s_kv - 1, 0], inputs.cmp_kv[-1, -1])
    check_matches(inputs, emulate(inputs))


def test_sparse_attn_says_why_it_cannot_run_here():
    reason = flashmla.available()
    if reason is None:
        pytest.skip("FlashMLA is available on this machine")
    assert "FlashMLA unavailable" in reason
    assert ("flash_mla" in reason) or ("CUDA" in reason)
    kernel = registry.load("flashmla")
    assert kernel.available() == reason
    assert kernel.preconditions.dims == {"H": (64, 128), "D": (512,)}
    inputs = make_inputs([[[0]]], seqused=[1], win=1)
    with pytest.raises(flashmla.FlashMLAUnavailable, match="FlashMLA unavailable"):
        kernel(**inputs.kwargs())


# -- the contract and FlashMLA: where they agree, where they differ -------------------

def test_empty_token_is_zero_as_in_the_contract():
    """Agreement: a token with no live entry gives 0 in FlashMLA's docs (tests/ref.py) and
    in the SM90 source (`rL == 0` sets the scale factor to 0), whatever the sink, as the
    contract asks."""
    rows = [[[0, 1, 4, 5], [0, 1, 4, 5]]]
    inputs = make_inputs(rows, seqused=[1], win=4,
                         sink=sinks(math.inf, -math.inf, 0.0, 3e38, -3e38, 1e30))
    t = translate(inputs)
    assert t.topk_length.tolist() == [0, 1]        # token 0: seq_used 0
    for model in ("docs", "sm90"):
        out = emulate(inputs, model=model)
        assert bool((out[0, 0] == 0).all()), model
        check_matches(inputs, out)


@pytest.mark.parametrize("sink", [math.inf, -math.inf, 3e38, -3e38, 1e30, -1e30, 88.0])
def test_infinite_and_edge_sinks_agree(sink):
    """Agreement: `+inf` zeroes the output, `-inf` is a plain softmax, finite sinks up to
    the fp32 edge enter as exp(sink - m), in the docs, in the SM90 sketch and in the
    contract."""
    rows = [[[0, 1, 2, 3, 4]]]
    inputs = make_inputs(rows, seqused=[5], win=4, sink=sinks(sink, 0.0))
    for model in ("docs", "sm90"):
        check_matches(inputs, emulate(inputs, model=model))


def test_documented_nan_caveat_past_topk_length():
    """Difference (documented): "topk_length provided, a valid index past topk_length[i]
    pointing to a k token containing NaN: output will contain NaN". The contract says the
    row of an ignored entry is never read. The adapter keeps dead entries' addresses, so
    the suite's poisoning property meets exactly this case; without topk_length (dead
    entries -1) it cannot arise. The SM90 source does not show it: its producer
    zero-fills invalid rows (cp.async with a false predicate) instead of reading them."""
    rows = [[[0, 1, 2, 5]]]   # seq_used 3: entry 5 (compressed slot 1) is dead
    inputs = make_inputs(rows, seqused=[3], win=4, cmp_table=[[0, 1]])
    poisoned_block = inputs.cmp_kv.clone()
    poisoned_block[0, 1] = float("nan")      # the row entry 5 would address
    inputs = inputs.replace(cmp_kv=poisoned_block)
    t = translate(inputs)
    assert t.topk_length.tolist() == [3] and t.indices[0, 0, 3].item() == 8 + 1
    docs = emulate(inputs)
    assert bool(torch.isnan(docs).all()), "the documented caveat, at its worst"
    with pytest.raises(AssertionError, match="differs from the reference"):
        check_matches(inputs, docs)
    check_matches(inputs, emulate(inputs, dead="invalid", topk_length=False))
    check_matches(inputs, emulate(inputs, model="sm90"))


@pytest.mark.parametrize("factor", [0.0, -1.0])
def test_sm90_non_positive_scale_is_predicted_non_finite(factor):
    """Difference (SM90 source, not documented; to be confirmed on the GPU): the kernel
    sets an invalid entry's RAW logit to -inf and multiplies by the scale afterwards, and
    takes the max before scaling. With a zero scale -inf * 0 is NaN, with a negative one
    +inf: the output is NaN whenever a walked block holds an invalid entry, and the -1
    padding to 128 puts one in every block pair unless a token's row is full. The contract
    allows any finite scale; the docs model and `sparse_attn_positive_scale` (the sign
    folded into q) give the contract's output."""
    rows = [[[0, 1, 2, 3]]]
    inputs = make_inputs(rows, seqused=[4], win=4, scale=factor * D**-0.5)
    check_matches(inputs, emulate(inputs))
    check_matches(inputs, emulate(inputs, model="sm90", positive_scale=True))
    out = emulate(inputs, model="sm90")
    assert not bool(torch.isfinite(out).all())


def test_sm90_logits_below_max_init_are_predicted_zero():
    """Difference (SM90 source): the running max starts at MAX_INIT_VAL = -1e30 (log2
    units). A token whose every logit is below -1e30 / log2(e) ~ -6.9e29 gets
    exp2(z - (-1e30)) = 0 for every key, L = 0, and the output 0, where the contract gives
    the softmax of its keys (inside the domain: logits down to -2^120)."""
    rows = [[[0, 1]]]
    inputs = make_inputs(rows, seqused=[2], win=2, sink=sinks(-math.inf), scale=1.0)
    q = torch.full((1, 1, H, D), 2.0**55, dtype=torch.bfloat16)
    ori = torch.full_like(inputs.ori_kv, -(2.0**45))       # every logit -512 * 2^100
    ori[0, 1] = -(2.0**44)                                  # a second key, half the logit
    inputs = inputs.replace(q=q, ori_kv=ori)
    check_matches(inputs, emulate(inputs))
    out = emulate(inputs, model="sm90")
    assert bool((out == 0).all())
    assert float(golden(inputs).abs().max()) > 2.0**43


def test_sm90_large_logits_are_predicted_wrong_through_the_fused_exponent():
    """Difference (SM90 source, if nvcc contracts `rP * scale - max` into one FFMA, as it
    does by default): the max element's exponent is then the product's rounding error, not
    0; at logits near 2^40 that error is thousands, exp2 of it overflows or vanishes. The
    contract's domain reaches 2^120; an unfused computation (the docs model, the
    reference) is exact here."""
    rows = [[[0, 1]]]
    inputs = make_inputs(rows, seqused=[2], win=2, sink=sinks(-math.inf), scale=0.75)
    q = torch.zeros(1, 1, H, D)
    q[..., 0] = 3.0 * 2.0**36
    ori = torch.zeros_like(inputs.ori_kv, dtype=torch.float32)
    ori[0, 0, 0], ori[0, 1, 0] = 1.0, 1.0 + 2.0**-7         # two keys, near logits
    ori[0, :2, 1] = torch.tensor([1.0, -1.0])                # values that tell them apart
    inputs = inputs.replace(q=q.to(torch.bfloat16), ori_kv=ori.to(torch.bfloat16))
    check_matches(inputs, emulate(inputs))
    with pytest.raises(AssertionError, match="differs from the reference"):
        check_matches(inputs, emulate(inputs, model="sm90"))


def test_the_call_path_with_the_emulation_standing_in_for_the_package(monkeypatch):
    """`sparse_attn` end to end (validate, translate, the keyword call of the wheel's
    signature, reshape) with a stand-in module whose `flash_mla_sparse_fwd` has the wheel's
    signature and runs the emulation, on the CPU."""
    calls = []

    def flash_mla_sparse_fwd(q, kv, indices, sm_scale, d_v=512, attn_sink=None,
                             topk_length=None, use_legacy=False, return_log2_lse=None):
        calls.append(use_legacy)
        out = emulate_sparse_fwd(q, kv, indices, sm_scale, d_v, attn_sink, topk_length)
        return out.to(torch.bfloat16), None, None

    class StandIn:
        pass

    module = StandIn()
    module.flash_mla_sparse_fwd = flash_mla_sparse_fwd
    monkeypatch.setattr(flashmla, "_probe", lambda: (None, module, True))
    monkeypatch.setattr(flashmla, "DEVICE", "cpu")
    rows = [[[0, 1, 2, 5, -1], [3, 3, 4, 6, 0]], [[1, 0, 4, 5, 7], [2, 2, 2, 2, 2]]]
    inputs = make_inputs(rows, seqused=[6, 7], win=4, sink=sinks(0.5, -math.inf, math.inf))
    for name in ("sparse_attn", "sparse_attn_no_topk_length", "sparse_attn_positive_scale"):
        out = getattr(flashmla, name)(**inputs.kwargs())
        assert out.shape == (2, 2, H, D) and out.dtype == torch.bfloat16
        check_matches(inputs, out.float())
    assert calls == [True, True, True]
