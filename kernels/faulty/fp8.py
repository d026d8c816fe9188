"""Seeded faulty kernels of the quantised path (docs/contract.md section 12), calling
convention v2: one correct torch FP8 kernel, `Fp8DequantV2`, whose every step that an FP8
decode kernel gets wrong sits behind one bug switch, and the same code with exactly one
switch set per mutant.

The correct path (`sparse_attn`, registered as `fp8-dequant-v2`): the live lanes and their
addresses as the contract gives them (`contracts.v2.live_lanes`, an ignored lane read
through a safe address and its row zeroed with `where`), each lane's record read from the
byte pool (fp8_ds_v4 split by block, `contracts.formats.read_rows`), the record
dequantised by this module's own decoder (`dequantise`: e4m3fn codes (e4m3fnuz in the
`_fnuz` layouts) times their group's
scale, the RoPE tail as bf16; a per-tensor pool's codes times its scale argument:
`dequantise_per_tensor`), then the contract's formula (`attend`, as
`attention.reference.attend`: logits from the key, a max-subtracted softmax with the sink
in the denominator only, the value product, exactly 0 for an empty token) in float32.

Each mutant (`MUTANTS_FP8`, registered as `mutant-fp8-<bug>`) declares the format(s) its
bug can touch (`kv_format`); `BUGS` says what each one does and what input exposes it.
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.contracts.formats import UE8M0_BIAS, UE8M0_NAN_CODE, Format
from sparse_attn_conformance.contracts.v2 import Inputs, live_lanes, validate

MLA, V4 = "fp8_ds_mla", "fp8_ds_v4"
#: the same layouts with float8_e4m3fnuz codes (ROCm), pools typed float8_e4m3fnuz
MLA_FNUZ, V4_FNUZ = "fp8_ds_mla_fnuz", "fp8_ds_v4_fnuz"
#: the per-tensor formats: FP8 pools, one float32 scale each (`ori_kv_scale`, `cmp_kv_scale`)
E4M3, FNUZ = "fp8_e4m3", "fp8_e4m3fnuz"

#: bug -> (the formats it applies to, what it does and what exposes it)
BUGS: dict[str, tuple[tuple[str, ...], str]] = {
    "neighbour-scale": (
        (MLA, V4),
        "value i is scaled by its neighbour group's scale, `scale[(i // group + 1) % groups]` "
        "(an off-by-one in the group index). Exposed by a row whose groups have different "
        "scales."),
    "ue8m0-no-bias": (
        (V4,),
        "a UE8M0 scale byte e decoded as 2^e, without the bias 127. Exposed by any row with a "
        "non-zero NoPE value (its scale is 2^127 times too large)."),
    "ue8m0-bias-128": (
        (V4,),
        "a UE8M0 scale byte e decoded as 2^(e - 128): every scale halved. Exposed by any row "
        "with a non-zero NoPE value."),
    "e4m3fnuz": (
        (MLA, V4),
        "the codes read as float8_e4m3fnuz (exponent bias 8, 0x80 is NaN) instead of "
        "float8_e4m3fn: every value halved, a -0 code NaN. Exposed by any non-zero code."),
    "rope-as-fp8": (
        (MLA, V4),
        "the RoPE tail read as e4m3 codes (the first `rope` bytes of its field, one code per "
        "dim) instead of bf16 values. Exposed by any non-zero RoPE value with a non-zero "
        "query there."),
    "scale-on-rope": (
        (MLA, V4),
        "the RoPE tail multiplied by the last group's scale, as if the group index "
        "`min(i // group, groups - 1)` ran over the whole key. Exposed by a last scale other "
        "than 1 with a non-zero RoPE tail."),
    "scale-byte-off": (
        (V4,),
        "the UE8M0 scales read one byte late: group g takes scale byte g + 1, the last group "
        "the padding byte (0: 2^-127). Exposed by neighbouring groups of different scales, or "
        "a non-zero last group."),
    "scale-after-softmax": (
        (MLA, V4),
        "the logits computed from the unscaled codes (the scale multiplied into the value "
        "product only). Exposed by any scale other than 1 with a non-zero query."),
    "subnormal-flush": (
        (MLA, V4),
        "subnormal e4m3 codes (exponent bits 0) flushed to zero. Exposed by a group whose "
        "subnormal codes carry a large share of the row: a large scale, whose normal codes "
        "the magnitude cap turned to 0 (the raw regime draws them)."),
    "masked-multiply": (
        (MLA, V4),
        "an ignored lane reads its own address (wrapped into the pool, as a device reads "
        "whatever lies there) and is discarded by multiplying its row by the live mask "
        "instead of `where`: 0 * NaN = NaN. Exposed by an ignored lane whose address holds "
        "a poisoned (NaN) row."),
    "f32-scale-byte-swapped": (
        (MLA,),
        "the float32 scales read big-endian (each scale's 4 bytes reversed). Exposed by any "
        "row with a non-zero NoPE value."),
    "f32-scale-as-bf16": (
        (MLA,),
        "the float32 scale field read through a bf16 pointer: scale g is the bf16 at bytes "
        "[2 g, 2 g + 2) of the field (the low half of float32 scale g // 2 for even g, its "
        "high half for odd g). Exposed by any row with a non-zero NoPE value in group 0 or "
        "2."),
    "v4-row-interleaved": (
        (V4,),
        "an fp8_ds_v4 pool read row-interleaved (token t's 584 bytes at t * 584 of its "
        "block, data then scales) instead of split by block. Exposed by a live row other "
        "than row 0 of its block, or any live row's scales."),
    "pt-scale-ignored": (
        (E4M3, FNUZ),
        "a per-tensor pool's codes used without its scale argument. Exposed by any scale "
        "other than 1 with a non-zero row."),
    "pt-scales-swapped": (
        (E4M3, FNUZ),
        "each pool's codes multiplied by the other pool's scale (`ori_kv` by `cmp_kv_scale`). "
        "Exposed by pools of different scales, either pool read."),
    "pt-scale-reciprocal": (
        (E4M3, FNUZ),
        "a per-tensor pool's codes divided by its scale (an inverse-scale convention) "
        "instead of multiplied. Exposed by any scale other than 1 with a non-zero row."),
    "pt-key-unscaled": (
        (E4M3, FNUZ),
        "the logits computed from a per-tensor pool's unscaled codes, the scale multiplied "
        "into the value product only. Exposed by a scale other than 1 with a non-zero "
        "query."),
    "fnuz-read-as-fn": (
        (FNUZ, MLA_FNUZ, V4_FNUZ),
        "float8_e4m3fnuz codes (a per-tensor pool's, or a byte layout's NoPE codes) read as "
        "float8_e4m3fn (exponent bias 7): every value doubled, +-240 (0x7F, 0xFF) NaN. "
        "Exposed by any non-zero code."),
}


def e4m3_values(codes: torch.Tensor, bug: str | None = None,
                dtype: torch.dtype = torch.float8_e4m3fn) -> torch.Tensor:
    """The float32 values (exact) of codes `[..., n]` uint8 of `dtype` (e4m3fn or fnuz)."""
    if bug == "e4m3fnuz":
        dtype = torch.float8_e4m3fnuz
    elif bug == "fnuz-read-as-fn":
        dtype = torch.float8_e4m3fn
    v = torch.empty(codes.shape, dtype=torch.uint8).copy_(codes).view(dtype).float()
    if bug == "subnormal-flush":
        v = torch.where((codes & 0x78) == 0, torch.zeros((), dtype=v.dtype), v)
    return v


def group_scales(fmt: Format, recs: torch.Tensor, bug: str | None = None) -> torch.Tensor:
    """Each group's scale `[..., groups]` float32 of records `[..., row_bytes]` (exact: a
    UE8M0 scale is a power of two in float32's range, 2^-127 a subnormal)."""
    at = fmt.scale_at
    if fmt.scale == "f32":
        if bug == "f32-scale-as-bf16":
            raw = recs[..., at:at + 2 * fmt.groups].contiguous()
            return raw.view(torch.bfloat16).float()
        raw = recs[..., at:at + 4 * fmt.groups].contiguous()
        if bug == "f32-scale-byte-swapped":
            raw = raw.reshape(*raw.shape[:-1], fmt.groups, 4).flip(-1).reshape(raw.shape)
            raw = raw.contiguous()
        return raw.view(torch.float32)
    if bug == "scale-byte-off":
        at += 1
    raw = recs[..., at:at + fmt.groups]
    bias = {"ue8m0-no-bias": 0, "ue8m0-bias-128": UE8M0_BIAS + 1}.get(bug, UE8M0_BIAS)
    e = raw.to(torch.float64) - bias
    return torch.where(raw == UE8M0_NAN_CODE, float("nan"), torch.exp2(e)).float()


def dequantise(fmt: Format, recs: torch.Tensor, bug: str | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Records `[..., row_bytes]` (data, then scales) as float32 keys `[..., D]` and values
    `[..., D_v]`: NoPE codes times their group's scale, then the RoPE tail. Each product is
    rounded once, so a row is its exact value (`Format.decode`) rounded to float32, what
    the reference computes with."""
    codes = e4m3_values(recs[..., fmt.nope_at:fmt.nope_at + fmt.nope], bug, fmt.code_dtype)
    scales = group_scales(fmt, recs, bug)
    group = torch.arange(fmt.nope) // fmt.group
    if bug == "neighbour-scale":
        group = (group + 1) % fmt.groups
    nope = codes * scales[..., group]
    rope_bytes = recs[..., fmt.rope_at:fmt.rope_at + 2 * fmt.rope]
    if bug == "rope-as-fp8":
        rope = e4m3_values(rope_bytes[..., :fmt.rope], dtype=fmt.code_dtype)
    else:
        rope = rope_bytes.contiguous().view(torch.bfloat16).float()
    if bug == "scale-on-rope":
        rope = rope * scales[..., -1:]
    value = torch.cat([nope, rope], dim=-1)[..., :fmt.d_v]
    key_nope = codes if bug == "scale-after-softmax" else nope
    return torch.cat([key_nope, rope], dim=-1), value


def dequantise_per_tensor(pool: torch.Tensor, rows: torch.Tensor, scale: float,
                          bug: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `[..., D]` of per-tensor FP8 pool `pool`'s dtype as float32 keys and values:
    each code's value times `scale` (one rounding, as the reference's fp32 pipeline)."""
    dtype = torch.float8_e4m3fn if bug == "fnuz-read-as-fn" else pool.dtype
    codes = rows.view(torch.uint8)
    v = torch.empty(codes.shape, dtype=torch.uint8).copy_(codes).view(dtype).double()
    s = {"pt-scale-ignored": 1.0, "pt-scale-reciprocal": 1.0 / scale}.get(bug, scale)
    value = (v * s).float()
    return (v.float() if bug == "pt-key-unscaled" else value), value


def read_records(pool: torch.Tensor, block: torch.Tensor, row: torch.Tensor,
                 bug: str | None = None) -> torch.Tensor:
    """The records (data, then scales) of `pool[block, row]`, a byte pool, for index
    tensors of one shape, as bytes. A block-split pool (fp8_ds_v4) is viewed per block as
    its data area `[BLOCK, data]` then its scale area `[BLOCK, row_bytes - data]`
    (`contracts.formats.read_rows`' addressing)."""
    fmt = formats.FORMATS[formats.of_pool(pool)]
    pool = formats.as_u8(pool)  # an e4m3fnuz layout's pool is typed float8_e4m3fnuz
    if not fmt.block_split or bug == "v4-row-interleaved":
        return pool[block, row]  # token t at t * row_bytes of its block
    n, size = pool.shape[:2]
    flat = pool.reshape(n, size * fmt.row_bytes)  # each block's bytes are contiguous
    data = fmt.scale_at  # a record's data bytes: NoPE and RoPE, before the scales
    cut = size * data
    data_area = flat[:, :cut].reshape(n, size, data)
    scale_area = flat[:, cut:].reshape(n, size, fmt.row_bytes - data)
    return torch.cat([data_area[block, row], scale_area[block, row]], dim=-1)


def lane_addresses(inputs: Inputs, bug: str | None = None):
    """Per lane (window lanes, then compressed) the `(ori block, row)`, `(cmp block, row)`
    it reads and the live masks: an ignored lane reads a safe address (row 0 of block 0),
    except under "masked-multiply", where it reads its own address wrapped into the pool."""
    block = inputs.BLOCK
    live_w, live_c = live_lanes(inputs)
    w = inputs.window_swa_indices.to(torch.int64)
    c = inputs.idx_topk[:, :inputs.index_topk].to(torch.int64)
    table = inputs.cmp_block_table.to(torch.int64)
    b = inputs.batch_of_token[:, None].expand_as(c)
    if bug == "masked-multiply":
        w = w % (inputs.ori_kv.shape[0] * block)
        col = (c // block).clamp(0, table.shape[1] - 1)
        blk = table[b, col] % inputs.cmp_kv.shape[0]
    else:
        w = torch.where(live_w, w, 0)
        c = torch.where(live_c, c, 0)
        blk = torch.where(live_c, table[b, (c // block).clamp(max=table.shape[1] - 1)], 0)
    return (w // block, w % block), (blk, c % block), live_w, live_c


def attend(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, live: torch.Tensor,
           sink: torch.Tensor, softmax_scale: float,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`o` `[T, H, D_v]`: the contract's formula (attention.reference.attend) over keys
    `[T, L, D]` and values `[T, L, D_v]`."""
    q, key, value = q.to(dtype), key.to(dtype), value.to(dtype)
    z = softmax_scale * torch.einsum("thd,tld->thl", q, key)
    live_h = live[:, None, :]
    z = torch.where(live_h, z, torch.tensor(float("-inf"), dtype=dtype))
    m = z.amax(dim=-1, keepdim=True)
    empty = ~live.any(dim=-1)[:, None, None]
    m = torch.where(empty, torch.zeros((), dtype=dtype), m)
    p = torch.where(live_h, torch.exp(z - m), torch.zeros((), dtype=dtype))
    denom = p.sum(dim=-1, keepdim=True) + torch.exp(sink.to(dtype)[:, None] - m)
    o = torch.einsum("thl,tld->thd", p, value) / denom
    return torch.where(empty, torch.zeros((), dtype=dtype), o)


class Fp8DequantV2:
    """The torch FP8 kernel of calling convention v2, correct with `bug=None`; with `bug`
    one of `BUGS`, that one bug. Call it with the v2 keyword arguments."""

    convention = "v2"

    def __init__(self, bug: str | None = None,
                 kv_format: str | tuple[str, ...] = (MLA, V4, E4M3, FNUZ, MLA_FNUZ, V4_FNUZ)):
        if bug is not None and bug not in BUGS:
            raise ValueError(f"Fp8DequantV2: expected a bug among {sorted(BUGS)}, got {bug!r}")
        self.bug = bug
        self.kv_format = kv_format

    def __repr__(self) -> str:
        return f"Fp8DequantV2(bug={self.bug!r}, kv_format={self.kv_format!r})"

    def rows(self, pool: torch.Tensor, block: torch.Tensor, row: torch.Tensor,
             scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (float32) of the lanes reading `pool[block, row]` (`scale`: a
        per-tensor FP8 pool's)."""
        if pool.dtype == torch.bfloat16:  # a bf16 pool: its rows as stored
            rows = pool[block, row].float()
            return rows, rows
        if scale is not None:
            return dequantise_per_tensor(pool, pool[block, row], float(scale[0]), self.bug)
        fmt = formats.FORMATS[formats.of_pool(pool)]
        return dequantise(fmt, read_records(pool, block, row, self.bug), self.bug)

    def __call__(self, **kw) -> torch.Tensor:
        inputs = validate(**kw)
        (wb, wr), (cb, cr), live_w, live_c = lane_addresses(inputs, self.bug)
        ori_s, cmp_s = inputs.ori_kv_scale, inputs.cmp_kv_scale
        if self.bug == "pt-scales-swapped":
            ori_s, cmp_s = cmp_s, ori_s
        wk, wv = self.rows(inputs.ori_kv, wb, wr, ori_s)
        ck, cv = self.rows(inputs.cmp_kv, cb, cr, cmp_s)
        key, value = torch.cat([wk, ck], dim=1), torch.cat([wv, cv], dim=1)
        live = torch.cat([live_w, live_c], dim=1)
        if self.bug == "masked-multiply":
            mask = live[..., None].to(key.dtype)
            key, value = key * mask, value * mask
        else:
            zero = torch.zeros((), dtype=key.dtype)
            key = torch.where(live[..., None], key, zero)
            value = torch.where(live[..., None], value, zero)
        return attend(inputs.q, key, value, live, inputs.attn_sink, inputs.softmax_scale)


#: the correct kernel (registered as `fp8-dequant-v2`)
sparse_attn = Fp8DequantV2()

#: short name -> kernel; registered as `mutant-fp8-<name>` (kernels/registry.py)
MUTANTS_FP8 = {bug: Fp8DequantV2(bug, fmts[0] if len(fmts) == 1 else fmts)
               for bug, (fmts, _) in BUGS.items()}

__all__ = ["BUGS", "MUTANTS_FP8", "Fp8DequantV2", "attend", "dequantise", "dequantise_per_tensor",
           "e4m3_values", "group_scales", "lane_addresses", "read_records", "sparse_attn"]
