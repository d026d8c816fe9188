"""Cache formats (docs/contract.md section 12): how a pool row is stored, and its exact value.

A pool (`ori_kv`, `cmp_kv`) is either bf16 rows `[N, BLOCK, D]` (format "bf16", the
contract's first form) or raw bytes `uint8 [N, BLOCK, ROW_BYTES]` in one of DeepSeek's FP8
layouts, named by its row size. A row's value is its exact dequantisation: each e4m3 code
times its group's scale, computed in float64 (every such product is exact there), the RoPE
tail as stored. That value is the row for every formula of the contract, in both
conventions; a kernel and the reference read the same bytes, so no quantisation error
separates them.

| format | row bytes | D (key) | D_v (value) | layout of one token's row |
| --- | --- | --- | --- | --- |
| bf16 | 2 D | any | D | D bf16 |
| fp8_ds_mla | 656 | 576 | 512 | 512 e4m3fn, 4 float32 scales (one per 128), 64 bf16 RoPE |
| fp8_ds_v4 | 584 | 512 | 512 | 448 e4m3fn, 64 bf16 RoPE; 7 UE8M0 scales (one per 64), 1 pad |
| fp8_ds_mla_fnuz | 656 | 576 | 512 | fp8_ds_mla's layout, the codes float8_e4m3fnuz (ROCm) |
| fp8_ds_v4_fnuz | 584 | 512 | 512 | fp8_ds_v4's layout, the codes float8_e4m3fnuz (ROCm) |
| fp8_e4m3 | D | any | D | D float8_e4m3fn codes; one float32 scale per pool (an argument) |
| fp8_e4m3fnuz | D | any | D | D float8_e4m3fnuz codes (ROCm); one float32 scale per pool |

The per-tensor formats (sglang's and vLLM's `fp8_e4m3` caches, written by
`scaled_fp8_quant`) are pools of the FP8 dtype itself, `[N, BLOCK, D]`; their scale is not
in the pool but in the call: `ori_kv_scale` and `cmp_kv_scale`, float32 `[1]`, present
exactly when the pools are in such a format (`SCALE_ARGUMENTS`). A row's value is each
code's value times its pool's scale (exact in float64).

A row's key is NoPE then RoPE (`D` dims); its value is the first `D_v` of them.

A byte pool's bytes cannot say how its codes read (the fnuz layouts have the row sizes of
the e4m3fn ones), so its dtype says it: a pool of e4m3fn codes is `uint8`, a pool of
e4m3fnuz codes is typed `float8_e4m3fnuz` over the same bytes (`Format.pool_dtype`; the
scale and RoPE bytes are bytes all the same). Such a pool of 584- or 656-byte rows is a byte
layout, so a per-tensor fp8_e4m3fnuz pool has D other than 584 and 656.

fp8_ds_v4 is stored split by block, as FlashMLA (`tests/quant.py`, the sm90 kernel's scale
pointer), sglang's SM120 kernels and vLLM's `deepseek_v4_ops/cache_utils.py` all address
it: the pool is shaped `[N, BLOCK, 584]` (FlashMLA's view), but block `n`'s `BLOCK * 584`
bytes hold every token's 576 data bytes first (token `t` at `t * 576`: NoPE, then RoPE),
then every token's 8 scale bytes (token `t` at `BLOCK * 576 + t * 8`). The blocks may lie
at any stride (FlashMLA and vLLM pad it to a multiple of 576), each block's bytes
contiguous. This module calls a token's 584 bytes in the order data, scales its *record*;
`read_rows`, `records` and `to_pool` move between pools and records.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from sparse_attn_conformance.contracts.errors import ContractError

#: e4m3fn codes that are NaN (S.1111.111); every other code is a finite value.
E4M3_NAN_CODES = (0x7F, 0xFF)
#: How each code dtype reads: its NaN codes and the code of its largest finite value.
CODES: dict[torch.dtype, tuple[tuple[int, ...], int]] = {
    torch.float8_e4m3fn: (E4M3_NAN_CODES, 0x7E),
    torch.float8_e4m3fnuz: ((0x80,), 0x7F),
}
#: The UE8M0 code that is NaN; every other code `e` is 2^(e - 127).
UE8M0_NAN_CODE = 0xFF
UE8M0_BIAS = 127


@dataclass(frozen=True)
class Format:
    """One cache format: where each field of a row lies (byte offsets inside one row).

    nope: how many e4m3 values (the quantised part); group: values per scale;
    scale: "f32" (float32 scales) or "ue8m0" (one byte, a power of two); rope: bf16 values
    after the NoPE part in the key; d_v: the value's dims (the first of the key's);
    code_dtype: how the NoPE codes read (float8_e4m3fn, or float8_e4m3fnuz on ROCm).
    Every method takes rows as bytes or as the pool's dtype, and returns bytes.
    """

    name: str
    row_bytes: int
    nope: int
    group: int
    scale: str
    rope: int
    d_v: int
    nope_at: int
    scale_at: int
    rope_at: int
    #: stored split by block (data of every token, then scales of every token)
    block_split: bool = False
    code_dtype: torch.dtype = torch.float8_e4m3fn

    @property
    def pool_dtype(self) -> torch.dtype:
        """The dtype of a pool in this format: uint8 for e4m3fn codes, else the codes'."""
        return torch.uint8 if self.code_dtype == torch.float8_e4m3fn else self.code_dtype

    @property
    def nan_codes(self) -> tuple[int, ...]:
        return CODES[self.code_dtype][0]

    @property
    def largest(self) -> int:
        """The code of the largest finite value (448 for e4m3fn, 240 for e4m3fnuz)."""
        return CODES[self.code_dtype][1]

    @property
    def max(self) -> float:
        return float(torch.finfo(self.code_dtype).max)

    def code_values(self, codes: torch.Tensor) -> torch.Tensor:
        """The float64 values of NoPE `codes` (bytes): exact."""
        return code_values(as_u8(codes), self.code_dtype)

    @property
    def D(self) -> int:
        """The key's dims: NoPE then RoPE (q's last dimension)."""
        return self.nope + self.rope

    @property
    def groups(self) -> int:
        return self.nope // self.group

    @property
    def scale_bytes(self) -> int:
        return 4 if self.scale == "f32" else 1

    @property
    def pad(self) -> tuple[int, int]:
        """The byte range no field uses (`(start, stop)`, empty when none)."""
        used = sorted([(self.nope_at, self.nope_at + self.nope),
                       (self.scale_at, self.scale_at + self.groups * self.scale_bytes),
                       (self.rope_at, self.rope_at + 2 * self.rope)])
        end = used[-1][1]
        return (end, self.row_bytes)

    # -- fields ---------------------------------------------------------------------------
    def codes(self, rows: torch.Tensor) -> torch.Tensor:
        """The e4m3 codes `[..., nope]` uint8 of byte rows `[..., row_bytes]`."""
        return rows[..., self.nope_at:self.nope_at + self.nope]

    def scale_field(self, rows: torch.Tensor) -> torch.Tensor:
        """The raw scale bytes `[..., groups * scale_bytes]`."""
        return rows[..., self.scale_at:self.scale_at + self.groups * self.scale_bytes]

    def rope_field(self, rows: torch.Tensor) -> torch.Tensor:
        """The RoPE bytes `[..., 2 * rope]`."""
        return rows[..., self.rope_at:self.rope_at + 2 * self.rope]

    def scales(self, rows: torch.Tensor) -> torch.Tensor:
        """Each group's scale `[..., groups]` float64, exactly (NaN for a NaN code)."""
        raw = self.scale_field(as_u8(rows)).contiguous()
        if self.scale == "f32":
            return torch.empty(raw.shape, dtype=torch.uint8).copy_(raw).view(torch.float32).double()
        e = raw.to(torch.float64) - UE8M0_BIAS
        return torch.where(raw == UE8M0_NAN_CODE, float("nan"), torch.exp2(e))

    def rope_values(self, rows: torch.Tensor) -> torch.Tensor:
        raw = self.rope_field(as_u8(rows))
        return torch.empty(raw.shape, dtype=torch.uint8).copy_(raw).view(torch.bfloat16).double()

    # -- the value of a row --------------------------------------------------------------
    def decode(self, rows: torch.Tensor) -> torch.Tensor:
        """The exact value `[..., D]` float64 of byte rows `[..., row_bytes]`: NoPE codes
        times their group's scale, then the RoPE tail."""
        nope = self.code_values(self.codes(rows))
        scale = self.scales(rows).repeat_interleave(self.group, dim=-1)
        return torch.cat([nope * scale, self.rope_values(rows)], dim=-1)

    def magnitudes(self, rows: torch.Tensor) -> torch.Tensor:
        """Byte rows `[..., row_bytes]` whose value is the magnitude of `rows`' value: the
        sign bit of every e4m3 code, float32 scale and bf16 RoPE value cleared (UE8M0 has
        none); a NaN code stays NaN (e4m3fnuz's 0x80 too), an infinity stays infinite,
        padding is kept."""
        out = as_u8(rows).clone()
        codes = self.codes(out)
        nan = torch.isin(codes, torch.tensor(self.nan_codes, dtype=torch.uint8))
        codes[:] = torch.where(nan, codes, codes & 0x7F)
        if self.scale == "f32":  # little-endian: the sign is bit 7 of each scale's 4th byte
            self.scale_field(out)[..., 3::4] &= 0x7F
        self.rope_field(out)[..., 1::2] &= 0x7F  # and of each bf16's 2nd byte
        return out

    def encode(self, codes: torch.Tensor, scales: torch.Tensor, rope: torch.Tensor,
               pad: int = 0) -> torch.Tensor:
        """Byte rows `[..., row_bytes]` from e4m3 `codes` `[..., nope]` uint8, `scales`
        `[..., groups]` (float32 values for "f32", uint8 codes for "ue8m0") and `rope`
        `[..., rope]` bf16; the padding bytes hold `pad`."""
        codes = as_u8(codes)
        lead = codes.shape[:-1]
        out = torch.full((*lead, self.row_bytes), pad, dtype=torch.uint8)
        out[..., self.nope_at:self.nope_at + self.nope] = codes
        if self.scale == "f32":
            raw = as_bytes(scales.to(torch.float32))
        else:
            raw = scales.to(torch.uint8)
        out[..., self.scale_at:self.scale_at + self.groups * self.scale_bytes] = raw
        out[..., self.rope_at:self.rope_at + 2 * self.rope] = as_bytes(rope.to(torch.bfloat16))
        return out


@dataclass(frozen=True)
class PerTensor:
    """A per-tensor FP8 format: a pool `[N, BLOCK, D]` of `dtype` codes whose value is the
    code's times the pool's one float32 scale (its own call argument).

    nan_codes: the codes that are NaN; largest: the code of the largest finite value."""

    name: str
    dtype: torch.dtype
    nan_codes: tuple[int, ...]
    largest: int

    @property
    def max(self) -> float:
        return float(torch.finfo(self.dtype).max)

    def values(self, codes: torch.Tensor) -> torch.Tensor:
        """The float64 values of uint8 `codes` read as this format's dtype: exact."""
        return code_values(codes, self.dtype)

    def decode(self, rows: torch.Tensor, scale) -> torch.Tensor:
        """The exact value `[..., D]` float64 of rows of this dtype (or their bytes) times
        `scale` (a float, or a tensor broadcasting against the rows' leading dims)."""
        codes = rows.view(torch.uint8) if rows.dtype == self.dtype else rows
        scale = torch.as_tensor(scale, dtype=torch.float64)
        return self.values(codes) * scale[..., None]


def _data_bytes(fmt: Format) -> int:
    """A block-split format's data bytes per token (the record before the scales)."""
    return fmt.scale_at


def _areas(pool: torch.Tensor, fmt: Format) -> tuple[torch.Tensor, torch.Tensor]:
    """A block-split pool's data area `[N, BLOCK, data]` and scale area `[N, BLOCK, rest]`
    (views where the pool's blocks are contiguous, as they must be)."""
    n, size = pool.shape[0], pool.shape[1]
    flat = pool.reshape(n, size * fmt.row_bytes)
    data = _data_bytes(fmt)
    return (flat[:, :size * data].reshape(n, size, data),
            flat[:, size * data:].reshape(n, size, fmt.row_bytes - data))


def read_rows(pool: torch.Tensor, block: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """The rows `pool[block, row]` (index tensors of one shape): bf16 rows of a bf16 pool,
    a byte pool's records `[..., row_bytes]` (for a block-split format, gathered from the
    block's data and scale areas). Memory follows the rows read, not the pool."""
    name = of_pool(pool)
    fmt = FORMATS.get(name)
    if fmt is None or not fmt.block_split:
        return pool[block, row]
    data, scales = _areas(pool, fmt)
    return torch.cat([data[block, row], scales[block, row]], dim=-1)


def records(pool: torch.Tensor) -> torch.Tensor:
    """Every row of a byte pool as records `[N, BLOCK, row_bytes]` uint8 (a copy; a
    per-tensor FP8 pool's rows as they are)."""
    fmt = FORMATS.get(of_pool(pool))
    if fmt is None:
        return pool.clone(memory_format=torch.contiguous_format)
    if not fmt.block_split:
        return as_u8(pool).clone(memory_format=torch.contiguous_format)
    return as_u8(torch.cat(_areas(pool, fmt), dim=-1))


def to_pool(name: str, recs: torch.Tensor) -> torch.Tensor:
    """A contiguous pool `[N, BLOCK, row_bytes]` in format `name` (of its `pool_dtype`)
    holding records `recs` (bytes, or of the pool's dtype)."""
    fmt = FORMATS.get(name)
    if fmt is None:
        return recs.contiguous()
    recs = as_u8(recs)
    if fmt.block_split:
        n, size, width = recs.shape
        data = _data_bytes(fmt)
        flat = torch.cat([recs[..., :data].reshape(n, size * data),
                          recs[..., data:].reshape(n, size * (width - data))], dim=1)
        recs = flat.reshape(n, size, width)
    return recs.contiguous().view(fmt.pool_dtype)


def as_u8(t: torch.Tensor) -> torch.Tensor:
    """A tensor of one-byte elements (a byte pool of any `pool_dtype`, its rows, its codes)
    as its bytes: a view, no copy."""
    return t if t.dtype == torch.uint8 else t.view(torch.uint8)


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """`t`'s bytes (`[..., last * itemsize]` uint8), from a fresh contiguous copy (a view
    as bytes needs unit strides, which an expanded or empty tensor may lack)."""
    return torch.empty(t.shape, dtype=t.dtype).copy_(t).view(torch.uint8)


def code_values(codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float64 values of uint8 `codes` read as FP8 `dtype`: exact."""
    return torch.empty(codes.shape, dtype=torch.uint8).copy_(codes).view(dtype).double()


def e4m3(codes: torch.Tensor) -> torch.Tensor:
    """The float64 values of float8_e4m3fn codes (uint8): exact."""
    return code_values(codes, torch.float8_e4m3fn)


#: The FP8 formats by name (section 12). Offsets: FlashMLA's and vLLM's `fp8_ds_mla`
#: (V3.2) and FlashMLA's V4 ("MODEL1") sparse layout, as the contract states them.
_MLA = Format("fp8_ds_mla", row_bytes=656, nope=512, group=128, scale="f32", rope=64,
              d_v=512, nope_at=0, scale_at=512, rope_at=528)
_V4 = Format("fp8_ds_v4", row_bytes=584, nope=448, group=64, scale="ue8m0", rope=64, d_v=512,
             nope_at=0, scale_at=576, rope_at=448, block_split=True)
#: The fnuz layouts: the same bytes, the codes read as float8_e4m3fnuz (ROCm gfx942).
FORMATS: dict[str, Format] = {f.name: f for f in (
    _MLA, _V4,
    replace(_MLA, name="fp8_ds_mla_fnuz", code_dtype=torch.float8_e4m3fnuz),
    replace(_V4, name="fp8_ds_v4_fnuz", code_dtype=torch.float8_e4m3fnuz))}
#: The per-tensor FP8 formats by name (section 12): pools of the FP8 dtype, one scale each.
PER_TENSOR: dict[str, PerTensor] = {
    name: PerTensor(name, dtype, *CODES[dtype])
    for name, dtype in (("fp8_e4m3", torch.float8_e4m3fn),
                        ("fp8_e4m3fnuz", torch.float8_e4m3fnuz))
}
#: The call's extra arguments when the pools are per-tensor FP8: each pool's scale.
SCALE_ARGUMENTS = ("ori_kv_scale", "cmp_kv_scale")
BF16 = "bf16"
#: Every format a pool may be in, bf16 first (the default).
NAMES = (BF16, *FORMATS, *PER_TENSOR)


def get(name: str) -> Format | None:
    """The byte-row format `name` (None for bf16 and the per-tensor formats, whose rows are
    D values: `per_tensor`); an unknown name raises `ContractError`."""
    if name not in NAMES:
        raise ContractError(f"kv_format: expected one of {NAMES}, got {name!r}")
    return FORMATS.get(name)


def per_tensor(name: str) -> PerTensor | None:
    """The per-tensor FP8 format `name`, or None (bf16, a byte-row format)."""
    return PER_TENSOR.get(name)


def scale_arguments(pool) -> tuple[str, ...]:
    """The scale arguments a call whose `ori_kv` is `pool` takes: `SCALE_ARGUMENTS` for a
    per-tensor FP8 pool, none otherwise."""
    is_fp8 = isinstance(pool, torch.Tensor) and of_pool(pool) in PER_TENSOR
    return SCALE_ARGUMENTS if is_fp8 else ()


def of_pool(pool: torch.Tensor) -> str:
    """The format a pool tensor is in, by dtype and row size (no check of the values): a
    byte layout where the dtype and the row size are one's, else a per-tensor format by
    dtype."""
    if pool.dtype == torch.bfloat16:
        return BF16
    for name, fmt in FORMATS.items():
        if pool.dtype == fmt.pool_dtype and pool.shape[-1] == fmt.row_bytes:
            return name
    for name, pt in PER_TENSOR.items():
        if pool.dtype == pt.dtype:
            return name
    return "unknown"


def key_dims(name: str, D: int | None = None) -> int | None:
    """q's D for a pool in format `name` (None: any, for bf16)."""
    fmt = get(name)
    return None if fmt is None else fmt.D


def value_dims(name: str, D: int) -> int:
    """The output's last dim for a call whose q has `D` dims and pools in format `name`."""
    fmt = get(name)
    return D if fmt is None else fmt.d_v


def values(pool_rows: torch.Tensor, scale=None) -> torch.Tensor:
    """Rows read from a pool (any leading shape, the pool's last dim): their values, bf16
    as stored for a bf16 pool, float64 dequantised for a byte pool or a per-tensor FP8 one
    (times `scale`: a float or a tensor broadcasting against the leading dims)."""
    if pool_rows.dtype == torch.bfloat16:
        return pool_rows
    name = of_pool(pool_rows)
    if name in PER_TENSOR:
        if scale is None:
            raise ContractError(f"pool rows: rows of format {name} need their pool's scale")
        return PER_TENSOR[name].decode(pool_rows, scale)
    if name == "unknown":
        raise ContractError(f"pool rows: expected bf16 or uint8 rows of {_sizes()} bytes, got "
                            f"{pool_rows.dtype} rows of {pool_rows.shape[-1]}")
    return FORMATS[name].decode(pool_rows)


def _of(dtype: torch.dtype) -> list[str]:
    """The byte layouts whose pools are of `dtype`."""
    return [n for n, f in FORMATS.items() if f.pool_dtype == dtype]


def _sizes() -> str:
    return ", ".join(f"{FORMATS[n].row_bytes} ({n})" for n in _of(torch.uint8))


def check_pool(name: str, pool, D: int) -> str:
    """The format of pool argument `name` (`ori_kv`/`cmp_kv`) for a call with q's `D`:
    bf16 or per-tensor FP8 `[N, BLOCK, D]`, or `[N, BLOCK, ROW_BYTES]` of a byte layout's
    `pool_dtype` whose key has `D` dims. Anything else raises `ContractError` naming the
    argument."""
    if not isinstance(pool, torch.Tensor):
        raise ContractError(f"{name}: expected a torch.Tensor, got {type(pool).__name__}")
    if pool.dim() != 3:
        raise ContractError(f"{name}: expected 3 dimensions [N, BLOCK, D or ROW_BYTES], got "
                            f"shape {tuple(pool.shape)}")
    fmt_name = of_pool(pool)
    if fmt_name in FORMATS and FORMATS[fmt_name].pool_dtype != torch.uint8 \
            and FORMATS[fmt_name].D != D:
        raise ContractError(
            f"{name}: expected a pool whose key has q's D={D} dims; a {pool.dtype} pool of "
            f"{pool.shape[-1]}-byte rows is byte layout {fmt_name}, whose key has "
            f"{FORMATS[fmt_name].D} dims (a per-tensor pool of that dtype has D other than "
            f"{', '.join(str(FORMATS[n].row_bytes) for n in _of(pool.dtype))})")
    if pool.dtype == torch.bfloat16 or fmt_name in PER_TENSOR:
        if pool.shape[-1] != D:  # a row is D values: q's
            raise ContractError(f"{name}: expected shape [N, BLOCK, D={D}] (format {fmt_name}: "
                                f"D values a row), got shape {tuple(pool.shape)}")
        return fmt_name
    if pool.dtype != torch.uint8 and fmt_name not in FORMATS:
        per = ", ".join(f"{pt.dtype} ({n}; or bytes of {', '.join(_of(pt.dtype))})"
                        if _of(pt.dtype) else f"{pt.dtype} ({n})" for n, pt in PER_TENSOR.items())
        raise ContractError(f"{name}: expected dtype torch.bfloat16 (format bf16), "
                            f"torch.uint8 (bytes of {', '.join(_of(torch.uint8))}) or {per}, "
                            f"got {pool.dtype}")
    if fmt_name == "unknown":
        raise ContractError(f"{name}: expected uint8 rows of {_sizes()} bytes, got rows of "
                            f"{pool.shape[-1]} bytes (shape {tuple(pool.shape)})")
    fmt = FORMATS[fmt_name]
    if fmt.D != D:
        raise ContractError(f"{name}: expected a pool whose key has q's D={D} dims; rows of "
                            f"{fmt.row_bytes} bytes are format {fmt_name}, whose key has "
                            f"{fmt.D} dims (q must be [..., {fmt.D}])")
    return fmt_name


def magnitudes(pool: torch.Tensor) -> torch.Tensor:
    """A copy of `pool` (any format) whose every row's value is the magnitude of the
    original's, elementwise (`Format.magnitudes`; `abs` for bf16)."""
    name = of_pool(pool)
    if name == BF16:
        return pool.abs()
    if name in PER_TENSOR:  # the sign bit cleared; a NaN code (fnuz's is 0x80) kept
        codes = pool.contiguous().view(torch.uint8)
        nan = torch.isin(codes, torch.tensor(PER_TENSOR[name].nan_codes, dtype=torch.uint8))
        return torch.where(nan, codes, codes & 0x7F).view(pool.dtype)
    fmt = FORMATS[name]
    return to_pool(name, fmt.magnitudes(records(pool)))


def poison_rows(fmt: Format, n: int, gen: torch.Generator) -> torch.Tensor:
    """`n` byte rows a kernel must never read (`[n, row_bytes]` uint8), each breaking a
    different careless read, cycled: NaN codes (e4m3fn's 0x7F and 0xFF, e4m3fnuz's 0x80)
    with NaN scales and a NaN RoPE tail; random codes with a NaN scale and an infinite
    tail; random codes with an infinite scale (NaN for UE8M0) and a -inf tail; the largest
    codes with the largest scale and a 3e38 tail. The padding bytes are random. Four
    templates, gathered: a long context's unread pool costs a copy, not a random draw per
    byte."""
    kinds = torch.randint(0, 256, (4, fmt.row_bytes), generator=gen, dtype=torch.uint8)
    codes = fmt.codes(kinds)
    nan = torch.tensor(fmt.nan_codes, dtype=torch.uint8)
    codes[0] = nan[torch.arange(fmt.nope) % len(nan)]
    codes[3] = fmt.largest  # +448 (+240 for e4m3fnuz) everywhere
    field = fmt.scale_field(kinds)
    if fmt.scale == "f32":
        bad = torch.tensor([float("nan"), float("nan"), float("inf"), 3.0e38],
                           dtype=torch.float32)
        field[:] = as_bytes(bad[:, None].expand(4, fmt.groups))
    else:
        field[:] = torch.tensor([UE8M0_NAN_CODE, UE8M0_NAN_CODE, UE8M0_NAN_CODE, 254],
                                dtype=torch.uint8)[:, None]
    rope = torch.tensor([float("nan"), float("inf"), float("-inf"), 3.0e38],
                        dtype=torch.bfloat16)
    fmt.rope_field(kinds)[:] = as_bytes(rope[:, None].expand(4, fmt.rope))
    out = kinds[torch.arange(n) % 4]
    start, stop = fmt.pad
    if stop > start:
        out[:, start:stop] = torch.randint(0, 256, (n, stop - start), generator=gen,
                                           dtype=torch.uint8)
    return out


def poison_codes(pt: PerTensor, n: int, D: int, gen: torch.Generator) -> torch.Tensor:
    """`n` rows of `D` codes `[n, D]` uint8 a kernel must never read, cycled: every code a
    NaN code; random codes with one NaN; the largest code of either sign (times a large
    scale: far past any live logit)."""
    nan = torch.tensor(pt.nan_codes, dtype=torch.uint8)
    kinds = torch.randint(0, 256, (3, D), generator=gen, dtype=torch.uint8)
    kinds[0] = nan[torch.arange(D) % len(nan)]
    kinds[1, 0] = nan[0]
    kinds[2] = torch.tensor([pt.largest, pt.largest | 0x80], dtype=torch.uint8)[torch.arange(D) % 2]
    return kinds[torch.arange(n) % 3]


def check_scale(name: str, value) -> torch.Tensor:
    """Per-tensor scale argument `name` (`ori_kv_scale`/`cmp_kv_scale`): a float32 CPU
    tensor of shape `[1]` holding a finite value > 0 (section 12); else `ContractError`."""
    if not isinstance(value, torch.Tensor):
        raise ContractError(f"{name}: expected a torch.Tensor (float32, shape [1]), got "
                            f"{type(value).__name__}")
    if value.dtype != torch.float32 or tuple(value.shape) != (1,):
        raise ContractError(f"{name}: expected a float32 tensor of shape [1], got "
                            f"{value.dtype} of shape {tuple(value.shape)}")
    v = float(value.reshape(()))
    if not (v > 0 and v < float("inf")):
        raise ContractError(f"{name}: expected a finite scale > 0, got {v!r}")
    return value


def pool_values(pool: torch.Tensor, scale=None) -> torch.Tensor:
    """Every row's value `[N * BLOCK, D_v]` float64 (flat row `n * BLOCK + r`) of a pool in
    any format; `scale` is a per-tensor FP8 pool's."""
    name = of_pool(pool)
    if name in PER_TENSOR or name == BF16:
        return values(pool.reshape(-1, pool.shape[-1]), scale).double()
    fmt = FORMATS[name]
    return fmt.decode(records(pool).reshape(-1, fmt.row_bytes))[:, :fmt.d_v]


def poison_pool(pool: torch.Tensor, keep: torch.Tensor, gen: torch.Generator | None = None
                ) -> torch.Tensor:
    """A copy of byte pool `pool` with every row outside `keep` (`[N, BLOCK]` bool)
    replaced by `poison_rows` (a per-tensor FP8 pool's by `poison_codes`)."""
    name = of_pool(pool)
    if name in PER_TENSOR:
        out = pool.contiguous().clone().view(torch.uint8)
        flat = out.view(-1, pool.shape[-1])
        idx = torch.nonzero(~keep.reshape(-1)).flatten()
        gen = gen if gen is not None else torch.Generator().manual_seed(int(idx.numel()))
        flat[idx] = poison_codes(PER_TENSOR[name], idx.numel(), pool.shape[-1], gen)
        return out.view(pool.dtype)
    fmt = FORMATS[name]
    recs = records(pool)
    flat = recs.view(-1, fmt.row_bytes)
    idx = torch.nonzero(~keep.reshape(-1)).flatten()
    gen = gen if gen is not None else torch.Generator().manual_seed(int(idx.numel()))
    flat[idx] = poison_rows(fmt, idx.numel(), gen)
    return to_pool(name, recs)


__all__ = ["BF16", "E4M3_NAN_CODES", "FORMATS", "NAMES", "PER_TENSOR", "SCALE_ARGUMENTS",
           "CODES", "UE8M0_BIAS", "UE8M0_NAN_CODE", "Format", "PerTensor", "as_bytes", "as_u8",
           "check_pool",
           "check_scale", "code_values", "e4m3", "get", "key_dims", "magnitudes", "of_pool", "per_tensor",
           "poison_codes", "poison_pool", "poison_rows", "pool_values", "read_rows", "records",
           "scale_arguments", "to_pool", "value_dims", "values"]
