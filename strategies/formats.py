"""Byte pools in DeepSeek's FP8 cache formats (contracts/formats.py, docs/contract.md
section 12), drawn from a case's bf16 pools: the suite draws the bytes, so the reference
reads exactly what the kernel reads.

Per case a regime (Hypothesis draws it, so a failure shrinks towards "quantised"):

- "quantised": each group quantised as the cache writers do (FlashMLA's and vLLM's V4
  writers: the smallest power of two that brings the group's amax under 448; V3.2: sglang's
  `amax / 448` in float32, or FlashMLA's power of two), the RoPE tail as drawn. The value
  regimes (one-hot rows, dominant keys, extreme magnitudes) survive up to e4m3's rounding;
- "raw": every group's codes and scale drawn directly: every finite e4m3 code (subnormals,
  +-0, +-448 and their neighbours), scales across the whole UE8M0 range (2^-127 .. 2^127)
  or float32 scales from subnormal to 3e38, groups of one scale with mixed magnitudes, and
  the RoPE tail at its extremes;
- "mixed": quantised, then a share of the groups raw.

Precondition (written in the contract, section 12): a row's values stay within the
magnitudes the case's value regime drew (the pool's largest |value|): a raw code whose
product with its scale would pass that becomes +-0, so logits stay in the contract's
domain (section 5); a huge scale then carries only zeros, a tiny one any code. A case of the
"extreme" value regime (logits up to 2^120) is always "quantised" with power-of-two scales,
which keeps its rows small integers times powers of two and its logits exact in fp32.

Every row no live lane reads is poisoned: NaN codes (0x7F, 0xFF; e4m3fnuz's 0x80), NaN or infinite scales
(UE8M0 0xFF), the largest codes and scale, random padding (`contracts.formats.poison_rows`).

The fnuz layouts (`fp8_ds_mla_fnuz`, `fp8_ds_v4_fnuz`) are drawn as their e4m3fn twins,
with e4m3fnuz codes: largest 240, NaN only 0x80, no -0 (a capped raw code becomes 0).

The per-tensor formats (`fp8_e4m3`, `fp8_e4m3fnuz`: FP8 pools with one float32 scale each,
the call's `ori_kv_scale` / `cmp_kv_scale`) take the same regimes: "quantised" as
`scaled_fp8_quant` does (the pool's scale `amax / max` in float32, or a power of two), "raw"
rows of codes drawn directly (every finite code of the dtype, its special ones) under a
scale anywhere from float32's subnormals to 3e38, "mixed" a share of the rows raw. The two
pools' scales differ (each its own pool's), so reading one pool with the other's shows.
"""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import reject
from hypothesis import strategies as st

from sparse_attn_conformance.contracts import formats, front_end
from sparse_attn_conformance.contracts.formats import UE8M0_BIAS, Format

REGIMES = ("quantised", "raw", "mixed")
#: e4m3fn codes a careless decoder gets wrong: +-0, the subnormals' ends, the smallest
#: normal, the largest values and their neighbours (an e4m3fnuz layout's: `special_codes`).
SPECIAL_CODES = (0x00, 0x80, 0x01, 0x81, 0x02, 0x07, 0x87, 0x08, 0x88, 0x09, 0x38, 0xB8,
                 0x7D, 0xFD, 0x7E, 0xFE)


def _finite(nan_codes: tuple[int, ...]) -> torch.Tensor:
    """Every code that is not NaN."""
    return torch.tensor([c for c in range(256) if c not in nan_codes], dtype=torch.uint8)


def _specials(fmt: Format) -> torch.Tensor:
    if fmt.code_dtype == torch.float8_e4m3fn:
        return torch.tensor(SPECIAL_CODES, dtype=torch.uint8)
    return special_codes(fmt)


def quantise(fmt: Format, rows: torch.Tensor, power_of_two: bool) -> torch.Tensor:
    """Records `[..., row_bytes]` of bf16 `rows` `[..., D]`, as a cache writer makes them:
    per group the scale `s` (the smallest power of two with amax / s <= max for UE8M0 or
    when `power_of_two`, else amax / max in float32; max is the code dtype's largest, 448
    for e4m3fn, 240 for e4m3fnuz), codes = (x / s) rounded to nearest even in the codes'
    dtype; the RoPE tail stored as is."""
    x = rows.double()
    nope = x[..., :fmt.nope].reshape(*x.shape[:-1], fmt.groups, fmt.group)
    amax = nope.abs().amax(dim=-1)
    if fmt.scale == "ue8m0" or power_of_two:
        e = torch.ceil(torch.log2(torch.where(amax > 0, amax, 1.0) / fmt.max))
        e = e.clamp(-UE8M0_BIAS, UE8M0_BIAS)
        scale = torch.exp2(e)
    else:
        scale = (amax / fmt.max).float().double()
        scale = torch.where(scale > 0, scale, 1.0)
    codes = (nope / scale[..., None]).float().to(fmt.code_dtype).view(torch.uint8)
    codes = codes.reshape(*x.shape[:-1], fmt.nope)
    raw = (e + UE8M0_BIAS).to(torch.uint8) if fmt.scale == "ue8m0" else scale.float()
    return fmt.encode(codes, raw, rows[..., fmt.nope:].to(torch.bfloat16))


def raw_groups(fmt: Format, recs: torch.Tensor, which: torch.Tensor, cap: float,
               gen: torch.Generator) -> torch.Tensor:
    """`recs` with the groups in `which` (`[..., groups]` bool) drawn raw: codes among every
    finite one (half of them among its special ones), a scale anywhere in its range; a code
    whose value times its scale passes `cap` becomes +-0 (0 in e4m3fnuz, which has no -0).
    The RoPE tail of rows with a raw group gets values at +-cap (rounded down to bf16) and
    bf16's smallest subnormals."""
    out = recs.clone()
    lead = recs.shape[:-1]
    finite = _finite(fmt.nan_codes)
    codes = finite[torch.randint(0, len(finite), (*lead, fmt.nope), generator=gen)]
    special = _specials(fmt)
    pick = special[torch.randint(0, len(special), codes.shape, generator=gen)]
    codes = torch.where(torch.rand(codes.shape, generator=gen) < 0.5, pick, codes)
    # a scale's exponent: near 1 (a third), anywhere in its range (a third), or at one end
    # of the range (a third: tiny and huge scales, each a careless decoder's trap)
    shape = (*lead, fmt.groups)
    lo, hi = (-UE8M0_BIAS, UE8M0_BIAS) if fmt.scale == "ue8m0" else (-149, 127)
    near = torch.randint(-12, 13, shape, generator=gen)
    anywhere = torch.randint(lo, hi + 1, shape, generator=gen)
    ends = torch.where(torch.rand(shape, generator=gen) < 0.5,
                       torch.randint(lo, lo + 24, shape, generator=gen),
                       torch.randint(hi - 23, hi + 1, shape, generator=gen))
    which_e = torch.randint(0, 3, shape, generator=gen)
    e = torch.where(which_e == 0, near, torch.where(which_e == 1, anywhere, ends))
    if fmt.scale == "ue8m0":
        raw = (e + UE8M0_BIAS).to(torch.uint8)
        scale = torch.exp2(e.double())
    else:
        # float32 scales from the subnormals (2^-149) to 3e38, any mantissa
        mant = 1 + torch.rand(shape, generator=gen, dtype=torch.float64)
        scale = (mant * torch.exp2(e.double())).float().double()
        scale = torch.where((scale > 0) & torch.isfinite(scale), scale, 2.0**-149)
        raw = scale.float()
    value = fmt.code_values(codes).reshape(*lead, fmt.groups, fmt.group).abs() * scale[..., None]
    too_big = (value > cap).reshape(*lead, fmt.nope)
    zero = codes & 0x80 if 0x80 not in fmt.nan_codes else torch.zeros_like(codes)
    codes = torch.where(too_big, zero, codes)  # +-0, sign kept where the dtype has -0
    drawn = fmt.encode(codes, raw, torch.zeros((*lead, fmt.rope), dtype=torch.bfloat16))
    group_of = torch.arange(fmt.nope) // fmt.group
    code_mask = which[..., group_of]
    fmt.codes(out)[:] = torch.where(code_mask, fmt.codes(drawn), fmt.codes(out))
    sb = fmt.scale_bytes
    scale_mask = which.repeat_interleave(sb, dim=-1)
    fmt.scale_field(out)[:] = torch.where(scale_mask, fmt.scale_field(drawn), fmt.scale_field(out))
    # the RoPE tail of rows with a raw group: some values at the magnitude cap, some tiny
    any_raw = which.any(dim=-1)
    rope = fmt.rope_values(out)
    big = torch.tensor(cap, dtype=torch.float64).to(torch.bfloat16).double()
    if float(big) > cap:  # rounded up: take the bf16 value below
        big = torch.nextafter(big.to(torch.bfloat16).float(), torch.tensor(0.0)).double()
    tiny = 2.0**-133
    extreme = torch.tensor([float(big), -float(big), tiny, -tiny], dtype=torch.float64)
    sel = extreme[torch.randint(0, 4, (*lead, fmt.rope), generator=gen)]
    hit = any_raw[..., None] & (torch.rand((*lead, fmt.rope), generator=gen) < 0.25)
    rope = torch.where(hit, sel, rope).to(torch.bfloat16)
    fmt.rope_field(out)[:] = formats.as_bytes(rope)
    return out


def encode_pool(fmt: Format, pool: torch.Tensor, keep: torch.Tensor, regime: str,
                power_of_two: bool, raw_share: float, cap: float,
                gen: torch.Generator) -> torch.Tensor:
    """A byte pool in format `fmt` (its own block layout) from bf16 `pool` `[N, BLOCK, D]`:
    rows in `keep` (`[N, BLOCK]` bool, the rows some live lane reads) encoded by `regime`,
    every other row poisoned. Only the kept rows are quantised: a long context's pool is
    mostly unread."""
    n, block = pool.shape[:2]
    flat_keep = keep.reshape(-1)
    kept = torch.nonzero(flat_keep).flatten()
    recs = torch.empty((n * block, fmt.row_bytes), dtype=torch.uint8)
    rows = quantise(fmt, pool.reshape(n * block, -1)[kept], power_of_two)
    if regime != "quantised" and kept.numel():
        share = 1.0 if regime == "raw" else raw_share
        which = torch.rand((kept.numel(), fmt.groups), generator=gen) < share
        rows = raw_groups(fmt, rows, which, cap, gen)
    recs[kept] = rows
    unread = torch.nonzero(~flat_keep).flatten()
    recs[unread] = formats.poison_rows(fmt, unread.numel(), gen)
    return formats.to_pool(fmt.name, recs.reshape(n, block, fmt.row_bytes))


def special_codes(pt: formats.PerTensor | Format) -> torch.Tensor:
    """The codes of FP8 format `pt` (per-tensor, or a byte layout's codes) a careless
    decoder gets wrong: +-0 (where the dtype has -0), the smallest and largest subnormals,
    the smallest normal, +-1, the largest value and the one below it, of either sign."""
    dtype = pt.dtype if isinstance(pt, formats.PerTensor) else pt.code_dtype
    vals = torch.arange(256, dtype=torch.uint8).view(dtype).double()
    pos = [c for c in range(128) if torch.isfinite(vals[c]) and vals[c] > 0]
    pos.sort(key=lambda c: float(vals[c]))
    normal = float(torch.finfo(dtype).smallest_normal)
    sub = [c for c in pos if float(vals[c]) < normal]
    picks = {0, pos[0], pos[-1], pos[-2], sub[-1] if sub else pos[0],
             next(c for c in pos if float(vals[c]) >= normal),
             next(c for c in pos if float(vals[c]) == 1.0)}
    out = sorted(picks | {c | 0x80 for c in picks})
    return torch.tensor([c for c in out if c not in pt.nan_codes], dtype=torch.uint8)


def per_tensor_scale(amax: float, pt: formats.PerTensor, power_of_two: bool) -> float:
    """The scale a per-tensor cache writer gives a pool whose largest |value| is `amax`:
    `amax / max` rounded to float32 (sglang's and vLLM's `scaled_fp8_quant`), or the
    smallest power of two with `amax / s <= max`; 1 for an all-zero pool."""
    if not amax > 0:
        return 1.0
    if power_of_two:
        e = int(torch.ceil(torch.log2(torch.tensor(amax / pt.max, dtype=torch.float64))))
        return 2.0 ** max(-149, min(127, e))
    s = float(torch.tensor(amax / pt.max, dtype=torch.float32))
    return s if s > 0 else 2.0**-149


def quantise_codes(pt: formats.PerTensor, rows: torch.Tensor, scale: float) -> torch.Tensor:
    """uint8 codes of `rows` divided by `scale`, rounded to nearest even in `pt`'s dtype; a
    quotient past the dtype's largest value (a float32 scale rounded down) saturates."""
    x = (rows.double() / scale).clamp(-pt.max, pt.max)
    return x.float().to(pt.dtype).view(torch.uint8)


def encode_per_tensor(pt: formats.PerTensor, pool: torch.Tensor, keep: torch.Tensor,
                      regime: str, power_of_two: bool, raw_share: float, cap: float,
                      gen: torch.Generator, scale: float | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """A pool in per-tensor format `pt` `[N, BLOCK, D]` and its scale (float32 `[1]`) from
    bf16 `pool`: the rows in `keep` encoded by `regime`, every other row poisoned
    (`contracts.formats.poison_codes`). `scale`: the pool's scale, given (another case's,
    to be mixed with this one: quotients past the largest code saturate)."""
    n, block, D = pool.shape
    flat = pool.reshape(n * block, D)
    kept = torch.nonzero(keep.reshape(-1)).flatten()
    rows = flat[kept].double()
    finite = rows[torch.isfinite(rows)]
    amax = float(finite.abs().max()) if finite.numel() else 0.0
    if scale is None and regime == "raw":
        # a scale anywhere in float32's range, as `raw_groups` draws a group's
        e = int(torch.randint(-149, 128, (), generator=gen))
        scale = float(torch.tensor((1 + float(torch.rand((), generator=gen))) * 2.0**e,
                                   dtype=torch.float32))
        scale = scale if 0 < scale < float("inf") else 2.0**-149
    elif scale is None:
        scale = per_tensor_scale(amax, pt, power_of_two)
    codes = quantise_codes(pt, rows, scale)
    if regime != "quantised" and kept.numel():
        share = 1.0 if regime == "raw" else raw_share
        which = torch.rand((kept.numel(), 1), generator=gen) < share
        finite_codes = _finite(pt.nan_codes)
        drawn = finite_codes[torch.randint(0, len(finite_codes), codes.shape, generator=gen)]
        special = special_codes(pt)
        pick = special[torch.randint(0, len(special), codes.shape, generator=gen)]
        drawn = torch.where(torch.rand(codes.shape, generator=gen) < 0.5, pick, drawn)
        # the precondition of the raw regime: no value past the case's magnitudes
        too_big = pt.values(drawn).abs() * scale > cap
        drawn = torch.where(too_big, torch.zeros((), dtype=torch.uint8), drawn)
        codes = torch.where(which, drawn, codes)
    out = torch.empty((n * block, D), dtype=torch.uint8)
    out[kept] = codes
    unread = torch.nonzero(~keep.reshape(-1)).flatten()
    out[unread] = formats.poison_codes(pt, unread.numel(), D, gen)
    return out.reshape(n, block, D).view(pt.dtype), torch.tensor([scale], dtype=torch.float32)


def as_format(inputs, name: str):
    """`inputs` (either convention) with both bf16 pools stored in format `name`, every row
    quantised as a cache writer does with power-of-two scales (`quantise`): exact for
    values that an e4m3 code times a power of two holds, as hand-built calls' are."""
    pt = formats.per_tensor(name)
    if pt is not None:
        out = {}
        for p in ("ori_kv", "cmp_kv"):
            pool = getattr(inputs, p)
            keep = torch.ones(pool.shape[:2], dtype=torch.bool)
            out[p], out[f"{p}_scale"] = encode_per_tensor(
                pt, pool, keep, "quantised", True, 0.0, 0.0, torch.Generator())
        return inputs.replace(**out)
    fmt = formats.get(name)
    if fmt is None:
        return inputs
    pools = {p: formats.to_pool(name, quantise(fmt, getattr(inputs, p), power_of_two=True))
             for p in ("ori_kv", "cmp_kv")}
    return inputs.replace(**pools)


def magnitude_cap(*pools: torch.Tensor) -> float:
    """The largest finite |value| of the drawn bf16 pools: raw values stay at or under it,
    inside the magnitudes the case's value regime chose (an extreme regime's tiny rows
    pair with huge queries, so no floor: a zero pool gets zero raw values). Block by
    block, so a long context's pool is not copied whole."""
    m = 0.0
    for p in pools:
        for part in p.split(max(1, 2**22 // max(1, p[0].numel())) if p.numel() else 1):
            finite = part[torch.isfinite(part)]
            if finite.numel():
                m = max(m, float(finite.abs().max()))
    return m


@st.composite
def in_format(draw, case, name: str):
    """`case` (a v1 or v2 `Case` whose q has the format's D) with both pools re-drawn as
    bytes in format `name`, the reads as drawn; `case.kv_format` names the format."""
    fmt, pt = formats.get(name), formats.per_tensor(name)
    if fmt is None and pt is None:
        return case
    inputs = case.inputs
    if pt is not None and formats.of_pool(torch.empty(0, 0, inputs.D, dtype=pt.dtype)) != name:
        # rows this wide of this dtype are a byte layout's (section 12): not a per-tensor
        # pool, so not a case of this format (D of 584 or 656, rarely drawn)
        reject()
    if fmt is not None and inputs.D != fmt.D:
        raise ValueError(f"in_format: expected a case with D={fmt.D} for {name}, got "
                         f"D={inputs.D}")
    regime = draw(st.sampled_from(REGIMES), label="fp8 regime")
    power_of_two = (fmt is not None and fmt.scale == "ue8m0") or draw(
        st.booleans(), label="power-of-two scales")
    raw_share = draw(st.sampled_from((0.05, 0.25, 0.5)), label="raw share")
    seed = draw(st.integers(0, 2**32 - 1), label="fp8 seed")
    if case.values == "extreme":
        # the extreme regime's logits are exact in fp32 in any order only while every row
        # is a small integer times a power of two: quantised with power-of-two scales it
        # stays one (a float32 scale such as amax / 448, or a raw group, gives logits of up
        # to 2^120 that fp32 rounds, and a near-cancelling one can change sign: its token
        # flips between its rows and 0, in the reference kernel too). Decided after the
        # draws, so that the draws are those of every other case.
        regime, power_of_two = "quantised", True
    gen = torch.Generator().manual_seed(seed)
    keep_ori, keep_cmp = front_end(inputs.CONVENTION).addressed_rows(inputs)
    cap = magnitude_cap(inputs.ori_kv, inputs.cmp_kv)
    if pt is not None:
        shared = getattr(case.config, "pool_scales", None) or (None, None)
        ori, ori_s = encode_per_tensor(pt, inputs.ori_kv, keep_ori, regime, power_of_two,
                                       raw_share, cap, gen, shared[0])
        cmp, cmp_s = encode_per_tensor(pt, inputs.cmp_kv, keep_cmp, regime, power_of_two,
                                       raw_share, cap, gen, shared[1])
        new = inputs.replace(ori_kv=ori, cmp_kv=cmp, ori_kv_scale=ori_s, cmp_kv_scale=cmp_s)
        config = case.config
        if hasattr(config, "pool_scales"):
            config = dataclasses.replace(config, pool_scales=(float(ori_s), float(cmp_s)))
        return dataclasses.replace(case, inputs=new, config=config, kv_format=name,
                                   fp8_regime=regime)
    ori = encode_pool(fmt, inputs.ori_kv, keep_ori, regime, power_of_two, raw_share, cap, gen)
    cmp = encode_pool(fmt, inputs.cmp_kv, keep_cmp, regime, power_of_two, raw_share, cap, gen)
    new = inputs.replace(ori_kv=ori, cmp_kv=cmp)
    return dataclasses.replace(case, inputs=new, kv_format=name, fp8_regime=regime)


__all__ = ["REGIMES", "SPECIAL_CODES", "as_format", "encode_per_tensor", "encode_pool", "in_format",
           "magnitude_cap", "per_tensor_scale", "quantise", "quantise_codes", "raw_groups",
           "special_codes"]
