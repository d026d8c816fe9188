"""A call whose every live logit lies far below zero, with the sink below them all.

Kernels keep a finite "minus infinity" for the running max or for an empty token's LSE
(sglang's SM120 kernel -1e20, vLLM's bf16 sparse MLA -1e30, this project's pypto kernel
once -1e30): a token whose live logits all lie below it is taken for empty and returns 0.
The contract's domain reaches logits of -2^120 (docs/contract.md section 5), and the sinks
-3e38 and -inf lie below every one of them, so such a token must still return the softmax
of its rows. Drawn values reach that corner only by chance; `far_below_zero` makes every
example reach it.
"""

from __future__ import annotations

import math

import torch

from sparse_attn_conformance.contracts import formats

#: The largest live logit magnitude aimed at: inside the domain's 2^120, and far below the
#: finite sentinels kernels use (-1e20 is about -2^66, -1e30 about -2^100).
TOP_LOG2 = 119
#: Sinks below every logit of the domain: the most negative finite fp32 sink the strategies
#: draw, and -inf.
LOW_SINKS = (-3.0e38, float("-inf"))


def _exact_dims(pool: torch.Tensor, D: int) -> torch.Tensor:
    """The key dims whose values the kernel reads without rounding: every dim of a bf16
    pool, the bf16 RoPE tail of an FP8 format (a NoPE value times a float32 scale may not be
    exact in fp32, and a rounded key could tie two rows the reference keeps apart)."""
    fmt = formats.FORMATS.get(formats.of_pool(pool))
    return torch.arange(D) if fmt is None else torch.arange(fmt.nope, fmt.D)


#: A row's exact dims are floored at this fraction of their pool's largest (log2): a
#: token's live rows then spread less than 2^53, so its smallest logit magnitude is past
#: 2^(119 - 53), which is past -1e20's.
FLOOR_LOG2 = -40


def _floored(values: torch.Tensor) -> torch.Tensor:
    """bf16 `values` `[N, BLOCK, d]` made non-negative and, per dim, at least 2^FLOOR_LOG2
    times its largest finite magnitude in the pool (above bf16's smallest subnormal);
    NaN and inf stay."""
    mag = values.abs()
    top = torch.where(torch.isfinite(mag), mag, 0).double().amax(dim=(0, 1))
    exp = torch.floor(torch.log2(top.clamp(min=1e-300)))
    floor = torch.where(top > 0, torch.exp2((exp + FLOOR_LOG2).clamp(min=-133)), 0.0)
    return torch.maximum(mag, floor.to(torch.bfloat16))


def _rows_made_positive(pool: torch.Tensor) -> torch.Tensor:
    """`pool` (any format) with every value's magnitude (`formats.magnitudes`) and its
    exact dims floored (`_floored`)."""
    name = formats.of_pool(pool)
    if name == formats.BF16:
        return _floored(pool)
    if formats.per_tensor(name) is not None:
        # codes spread at most 2^18 (e4m3's range): a zero code floored to the smallest
        # positive one is all the flooring needed
        codes = formats.magnitudes(pool).view(torch.uint8)
        return torch.where(codes == 0, torch.ones((), dtype=torch.uint8), codes).view(pool.dtype)
    fmt = formats.FORMATS[name]
    recs = fmt.magnitudes(formats.records(pool))
    rope = fmt.rope_values(recs).to(torch.bfloat16)
    fmt.rope_field(recs)[:] = formats.as_bytes(_floored(rope))
    return formats.to_pool(name, recs)


def _power_of_two_scales(inputs) -> dict:
    """A per-tensor FP8 call's pool scales rounded to powers of two within 2^+-20 (a code
    times such a scale is exact in fp32, so no kernel rounds a key the reference keeps, and
    no row is so small that q's bf16 range cannot lift its logit past the sentinels);
    {} otherwise."""
    out = {}
    for p in formats.SCALE_ARGUMENTS:
        scale = getattr(inputs, p, None)
        if scale is not None:
            e = torch.round(torch.log2(scale.double())).clamp(-20, 20)
            out[p] = torch.exp2(e).float()
    return out


def far_below_zero(inputs, gen: torch.Generator, finite_sinks: bool = False):
    """`inputs` (either convention) rewritten so that, for each token and head, every live
    logit is at most zero and, where the token's rows allow, below about -2^66:

    - every pool row's value replaced by its magnitude (`formats.magnitudes`: a sign bit
      cleared; unread rows stay poisoned), each exact dim (below) at least 2^-40 times its
      largest in the pool; a per-tensor FP8 pool's zero codes made its smallest positive
      one, its scale rounded to a power of two within 2^+-20 (so every key is exact in
      fp32, and within q's reach);
    - per (token, head), a query that is zero but for one dim `d`, `-2^e`, so a live row's
      logit is `-2^e * |k_d| * scale`, one exact product: `d` is a dim where the token's
      live rows are all non-zero (the tightest spread of them first, others in turn for
      the other heads), `e` chosen so that the largest live logit magnitude is about 2^119;
    - `softmax_scale` a power of two >= 1 that keeps `q` within bf16;
    - every sink -3e38 or -inf (drawn per head from `gen`; -3e38 for a kernel that declares
      finite sinks).

    Every logit stays within the domain (`|q_d k_d| * max(1, scale) <= 2^119`). A token
    whose chosen dim holds a zero row gets a logit 0 there (not far below zero; still a
    valid call)."""
    i = inputs.replace(ori_kv=_rows_made_positive(inputs.ori_kv),
                       cmp_kv=_rows_made_positive(inputs.cmp_kv), **_power_of_two_scales(inputs))
    att = i.attended()
    rows, live = att.rows.double(), att.live
    H, D = att.q.shape[-2], att.q.shape[-1]
    dims = _exact_dims(inputs.ori_kv, D)
    k = rows[..., dims].abs()                                # [*tokens, L, n]
    live_k = live[..., None] & torch.isfinite(k)
    kmax = torch.where(live_k, k, 0.0).amax(dim=-2)          # [*tokens, n]
    kmin = torch.where(live_k, k, float("inf")).amin(dim=-2)
    spread = torch.where((kmax > 0) & live.any(dim=-1, keepdim=True), kmin / kmax, 0.0)
    # ties broken at random, so that equal dims take turns across examples
    # (relative: a spread of 2^-40 must still sort above a dim whose spread is 0)
    jitter = torch.rand(spread.shape, generator=gen, dtype=torch.float64) * 1e-9
    order = torch.argsort(spread * (1 + jitter) + jitter * 1e-300, dim=-1,
                          descending=True)                         # [*tokens, n]
    # heads take the dims with a spread in turn (past them a head's logit would be 0 for a
    # zero row; only a token without any such dim uses the others)
    good = (spread > 0).sum(dim=-1, keepdim=True).clamp(min=1)      # [*tokens, 1]
    turn = torch.arange(H) % torch.where(good > 0, good, order.shape[-1])
    pick = torch.gather(order, -1, turn)                              # [*tokens, H]
    top = torch.gather(kmax, -1, pick)
    # 2^e * top <= 2^TOP_LOG2; a token without a live row: any exponent
    e = torch.where(top > 0, TOP_LOG2 - torch.ceil(torch.log2(top.clamp(min=1e-300))), 0.0)
    # q is bf16 (largest power of two 2^127): the rest of e goes into the scale
    s_exp = int(min(100.0, max(0.0, float(e.max()) - 126))) if e.numel() else 0
    q_exp = (e - s_exp).clamp(-133, 127)
    q = torch.zeros(att.q.shape, dtype=torch.float64)
    q.scatter_(-1, dims[pick][..., None], -torch.exp2(q_exp)[..., None])
    if finite_sinks:
        sink = torch.full((H,), LOW_SINKS[0])
    else:
        sink = torch.tensor(LOW_SINKS, dtype=torch.float64)[
            torch.randint(0, len(LOW_SINKS), (H,), generator=gen)]
    return i.replace(q=q.to(torch.bfloat16), softmax_scale=math.ldexp(1.0, s_exp),
                     attn_sink=sink.to(torch.float32))
