"""The cache-format layer (contracts/formats.py, docs/contract.md section 12) and the byte
pools the strategies draw in it (strategies/formats.py): exact decoding of every e4m3 and
UE8M0 code, the fields of a hand-built row of each format, fp8_ds_v4's block-split layout
(also at a padded block stride), the validators' named errors, the quantiser's round trip,
and what the drawn pools reach (special codes, extreme scales, poisoned unread rows)."""

from __future__ import annotations

import dataclasses
import math
import os
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.contracts import ContractError, Preconditions, formats, v1, v2
from sparse_attn_conformance.contracts.formats import FORMATS
from sparse_attn_conformance.kernels.interface import KernelUnderTest
from sparse_attn_conformance.kernels.torch.reference import sparse_attn_v2
from sparse_attn_conformance.strategies.formats import quantise

MLA, V4 = FORMATS["fp8_ds_mla"], FORMATS["fp8_ds_v4"]


def e4m3_value(code: int) -> float:
    """float8_e4m3fn by its bit fields (1 sign, 4 exponent with bias 7, 3 mantissa; no
    infinities, S.1111.111 NaN), independent of torch."""
    sign = -1.0 if code & 0x80 else 1.0
    exp, mant = (code >> 3) & 0xF, code & 0x7
    if exp == 0xF and mant == 0x7:
        return math.nan
    if exp == 0:
        return sign * math.ldexp(mant / 8, -6)
    return sign * math.ldexp(1 + mant / 8, exp - 7)


def bf16_bytes(x: float) -> bytes:
    """The two little-endian bytes of bf16 `x` (which must be exact in bf16)."""
    raw = struct.pack("<f", x)
    assert raw[:2] == b"\0\0", f"{x} is not exact in bf16"
    return raw[2:]


def row_tensor(raw: bytes | bytearray) -> torch.Tensor:
    return torch.tensor(list(raw), dtype=torch.uint8)


# -- decoding --------------------------------------------------------------------------------


def test_every_e4m3_code_decodes_exactly():
    codes = torch.arange(256, dtype=torch.uint8)
    got = formats.e4m3(codes)
    torch_ref = codes.view(torch.float8_e4m3fn).double()
    for c in range(256):
        want = e4m3_value(c)
        if c in formats.E4M3_NAN_CODES:
            assert math.isnan(want) and math.isnan(got[c]) and math.isnan(torch_ref[c]), hex(c)
        else:
            assert got[c].item() == want == torch_ref[c].item(), (hex(c), got[c].item(), want)
            # the sign of zero too
            assert math.copysign(1.0, got[c].item()) == math.copysign(1.0, want), hex(c)
    # the landmarks a careless decoder gets wrong
    assert got[0x01].item() == 2.0**-9 and got[0x07].item() == 7 * 2.0**-9
    assert got[0x08].item() == 2.0**-6 and got[0x7E].item() == 448.0
    assert got[0xFE].item() == -448.0 and got[0x80].item() == 0.0
    assert math.copysign(1.0, got[0x80].item()) == -1.0


def test_every_ue8m0_code_is_a_power_of_two():
    rows = torch.zeros(256, V4.row_bytes, dtype=torch.uint8)
    rows[:, V4.scale_at] = torch.arange(256, dtype=torch.uint8)
    scales = V4.scales(rows)[:, 0]
    for e in range(255):
        assert scales[e].item() == math.ldexp(1.0, e - 127), (e, scales[e].item())
    assert math.isnan(scales[255].item())
    assert scales[0].item() == 2.0**-127 and scales[254].item() == 2.0**127


def test_hand_built_fp8_ds_mla_row():
    # codes: group g holds g+1 at even positions (1.0 .. 4.0 as e4m3: 0x38, 0x40, 0x44,
    # 0x48) and a subnormal / 448 / -0 at a few odd ones
    group_code = [0x38, 0x40, 0x44, 0x48]
    codes = [group_code[i // 128] if i % 2 == 0 else 0x00 for i in range(512)]
    codes[1], codes[129], codes[259], codes[511] = 0x01, 0x7E, 0x80, 0xFE
    scales = [0.5, 3.0, 2.0**-130, 1.5 * 2.0**100]  # one subnormal float32
    rope = [float(k - 32) / 4 for k in range(64)]
    raw = bytes(codes) + b"".join(struct.pack("<f", s) for s in scales) \
        + b"".join(bf16_bytes(r) for r in rope)
    assert len(raw) == MLA.row_bytes == 656
    row = row_tensor(raw)[None]
    want = [e4m3_value(codes[i]) * scales[i // 128] for i in range(512)] + rope
    got = MLA.decode(row)[0]
    assert got.shape == (576,) and MLA.D == 576 and MLA.d_v == 512
    assert got.tolist() == want
    assert got[0].item() == 0.5 and got[128].item() == 6.0 and got[256].item() == 3 * 2.0**-130
    assert got[1].item() == 2.0**-9 * 0.5 and got[129].item() == 448 * 3.0
    assert got[512:].tolist() == rope  # the RoPE tail, unscaled
    assert formats.values(row)[0].tolist() == want
    # the value is the first 512 dims: NoPE only
    assert formats.value_dims("fp8_ds_mla", 576) == 512


def test_hand_built_fp8_ds_v4_record():
    # data: 448 codes, then 64 bf16 RoPE; then 7 UE8M0 scales (one per 64) and a pad byte
    codes = [0x38 + (i % 7) for i in range(448)]
    codes[0], codes[64], codes[447] = 0x7E, 0x01, 0x80
    exps = [127, 0, 254, 127 - 20, 127 + 20, 100, 1]
    rope = [float(k) - 31.5 for k in range(64)]
    raw = bytes(codes) + b"".join(bf16_bytes(r) for r in rope) + bytes(exps) + b"\xab"
    assert len(raw) == V4.row_bytes == 584
    rec = row_tensor(raw)[None]
    want = [e4m3_value(codes[i]) * math.ldexp(1.0, exps[i // 64] - 127) for i in range(448)]
    want += rope
    got = V4.decode(rec)[0]
    assert got.shape == (512,) and V4.D == 512 and V4.d_v == 512
    assert got.tolist() == want
    assert got[0].item() == 448.0 and got[64].item() == 2.0**-9 * 2.0**-127
    assert got[448:].tolist() == rope  # key = NoPE then RoPE, the tail unscaled
    assert formats.value_dims("fp8_ds_v4", 512) == 512
    # the pad byte decodes to nothing
    other = rec.clone()
    other[0, 583] = 0x00
    assert V4.decode(other).tolist() == V4.decode(rec).tolist()


# -- the fnuz layouts: the same bytes, e4m3fnuz codes, pools typed float8_e4m3fnuz -----------


@pytest.mark.parametrize("twin", ["fp8_ds_mla", "fp8_ds_v4"])
def test_fnuz_layout_reads_every_code_as_e4m3fnuz(twin):
    fn, fnuz = FORMATS[twin], FORMATS[f"{twin}_fnuz"]
    assert (fnuz.row_bytes, fnuz.D, fnuz.d_v, fnuz.scale_at, fnuz.rope_at, fnuz.block_split) == (
        fn.row_bytes, fn.D, fn.d_v, fn.scale_at, fn.rope_at, fn.block_split)
    assert fnuz.pool_dtype == torch.float8_e4m3fnuz and fn.pool_dtype == torch.uint8
    assert (fnuz.nan_codes, fnuz.largest, fnuz.max) == ((0x80,), 0x7F, 240.0)
    # every code, under a scale of 1 in every group (UE8M0 127, float32 1.0)
    codes = torch.arange(fn.nope) % 256
    scales = (torch.full((fn.groups,), 127) if fn.scale == "ue8m0" else torch.ones(fn.groups))
    rope = torch.linspace(-3, 3, fn.rope).to(torch.bfloat16)
    rec = fn.encode(codes.to(torch.uint8)[None], scales[None], rope[None])
    got, same_bytes = fnuz.decode(rec)[0], fn.decode(rec)[0]
    want = codes.to(torch.uint8).view(torch.float8_e4m3fnuz).double()
    assert torch.equal(got[:fn.nope].isnan(), want.isnan())
    assert torch.equal(got[:fn.nope].nan_to_num(7.0), want.nan_to_num(7.0))
    assert torch.equal(got[fn.nope:], rope.double())
    nan_at = torch.nonzero(got.isnan()).flatten() % 256
    assert set(nan_at.tolist()) == {0x80}
    # the landmarks: bias 8 (half of e4m3fn's value), 0x7F is 240, 0x80 NaN (no -0)
    assert got[0x38].item() == 0.5 and same_bytes[0x38].item() == 1.0
    assert got[0x7F].item() == 240.0 and math.isnan(same_bytes[0x7F].item())
    assert got[0x01].item() == 2.0**-10
    # a pool typed float8_e4m3fnuz over the same bytes is this format, its rows read as such
    recs = rec.expand(2, 3, fn.row_bytes).clone()
    pool = formats.to_pool(fnuz.name, recs)
    assert pool.dtype == torch.float8_e4m3fnuz and formats.of_pool(pool) == fnuz.name
    assert formats.of_pool(formats.to_pool(twin, recs)) == twin
    assert torch.equal(formats.records(pool), recs)
    blk, row = torch.tensor([1, 0]), torch.tensor([2, 1])
    rows = formats.read_rows(pool, blk, row)
    assert rows.dtype == torch.float8_e4m3fnuz
    assert torch.equal(formats.values(rows).nan_to_num(7.0), got.expand(2, -1).nan_to_num(7.0))
    assert torch.equal(formats.pool_values(pool).nan_to_num(7.0),
                       got[:fn.d_v].expand(6, -1).nan_to_num(7.0))


@pytest.mark.parametrize("name", ["fp8_ds_mla_fnuz", "fp8_ds_v4_fnuz"])
def test_fnuz_layout_poison_is_nan_in_its_codes(name):
    """The poison rows of a fnuz layout carry its NaN code (0x80): e4m3fn's 0x7F and 0xFF
    are 240 and -240 there, which would not poison."""
    fmt = FORMATS[name]
    rows = formats.poison_rows(fmt, 8, torch.Generator().manual_seed(1))
    assert bool((fmt.codes(rows[0::4]) == 0x80).all())
    assert bool((fmt.codes(rows[3::4]) == fmt.largest).all())
    finite = fmt.decode(rows).isfinite().all(dim=-1)
    huge = fmt.decode(rows).abs().amax(dim=-1) >= 3e38  # the fourth: the largest codes and scale
    assert not bool(finite[torch.arange(8) % 4 != 3].any()) and bool(huge[3::4].all())
    keep = torch.zeros(2, 4, dtype=torch.bool)
    keep[0, 1] = True
    recs = torch.zeros(2, 4, fmt.row_bytes, dtype=torch.uint8)
    out = formats.poison_pool(formats.to_pool(name, recs), keep)
    assert out.dtype == torch.float8_e4m3fnuz
    assert torch.equal(formats.records(out)[0, 1], recs[0, 1])
    values = formats.pool_values(out)
    poisoned = ~values.isfinite().all(dim=-1) | (values.abs().amax(dim=-1) >= 3e38)
    assert torch.equal(poisoned, torch.arange(8) != 1)


# -- fp8_ds_v4's block-split layout ------------------------------------------------------------


def _records(n: int, block: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, block, V4.row_bytes), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("block", [1, 3, 64])
def test_v4_pool_is_split_by_block(block):
    n = 3
    recs = _records(n, block)
    pool = formats.to_pool("fp8_ds_v4", recs)
    assert pool.shape == (n, block, 584) and pool.is_contiguous()
    flat = pool.reshape(n, block * 584)
    for b in range(n):
        for t in range(block):
            assert torch.equal(flat[b, t * 576:(t + 1) * 576], recs[b, t, :576]), (b, t)
            s = block * 576 + t * 8
            assert torch.equal(flat[b, s:s + 8], recs[b, t, 576:]), (b, t)
    assert torch.equal(formats.records(pool), recs)
    blk = torch.tensor([[2, 0], [1, 2]])
    row = torch.tensor([[block - 1, 0], [block // 2, 0]])
    assert torch.equal(formats.read_rows(pool, blk, row), recs[blk, row])


@pytest.mark.parametrize("block, offset", [(64, 0), (64, 576), (3, 17)])
def test_v4_pool_at_a_padded_block_stride(block, offset):
    """Blocks `ceil(BLOCK * 584 / 576) * 576` bytes apart inside a larger buffer (FlashMLA's
    and vLLM's padding), the view starting `offset` bytes in: the same records."""
    n = 3
    recs = _records(n, block, seed=1)
    dense = formats.to_pool("fp8_ds_v4", recs).reshape(n, block * 584)
    stride = -(-block * 584 // 576) * 576
    assert stride > block * 584 or block * 584 % 576 == 0
    gen = torch.Generator().manual_seed(2)
    buf = torch.randint(0, 256, (offset + n * stride + 64,), generator=gen, dtype=torch.uint8)
    for b in range(n):
        buf[offset + b * stride:offset + b * stride + block * 584] = dense[b]
    view = buf.as_strided((n, block, 584), (stride, 584, 1), offset)
    assert not view.is_contiguous() or stride == block * 584
    assert formats.of_pool(view) == "fp8_ds_v4"
    assert torch.equal(formats.records(view), recs)
    blk = torch.tensor([2, 1, 0, 2])
    row = torch.tensor([0, block - 1, block // 2, block - 1])
    assert torch.equal(formats.read_rows(view, blk, row), recs[blk, row])
    assert torch.equal(V4.decode(formats.read_rows(view, blk, row)).nan_to_num(7.0),
                       V4.decode(recs[blk, row]).nan_to_num(7.0))


def test_mla_pool_is_row_major():
    recs = torch.randint(0, 256, (2, 3, 656), generator=torch.Generator().manual_seed(3),
                         dtype=torch.uint8)
    pool = formats.to_pool("fp8_ds_mla", recs)
    assert torch.equal(pool, recs) and torch.equal(formats.records(pool), recs)


# -- named validator errors ----------------------------------------------------------------------


def v1_kwargs(D: int, ori_kv: torch.Tensor, cmp_kv: torch.Tensor, B=1, S=1, H=2, WIN=2):
    return dict(
        q=torch.zeros(B, S, H, D, dtype=torch.bfloat16), ori_kv=ori_kv,
        ori_block_table=torch.zeros(B, -(-WIN // ori_kv.shape[1]), dtype=torch.int32),
        cmp_kv=cmp_kv, cmp_block_table=torch.zeros(B, 1, dtype=torch.int32),
        topk_idxs=torch.full((B, S, WIN + 1), -1, dtype=torch.int32),
        attn_sink=torch.zeros(H), seqused_kv=torch.full((B,), 1, dtype=torch.int32),
        softmax_scale=0.5, window_size=WIN)


def v2_kwargs(D: int, ori_kv: torch.Tensor, cmp_kv: torch.Tensor, T=2, H=2):
    return dict(
        q=torch.zeros(T, H, D, dtype=torch.bfloat16), ori_kv=ori_kv,
        window_swa_indices=torch.zeros(T, 2, dtype=torch.int32), cmp_kv=cmp_kv,
        cmp_block_table=torch.zeros(T, 1, dtype=torch.int32),
        idx_topk=torch.full((T, 1), -1, dtype=torch.int32),
        position_ids=torch.zeros(T, 1, dtype=torch.int32), attn_sink=torch.zeros(H),
        softmax_scale=0.5, seq_per_batch=1, index_topk=1, compress_ratio=4)


def byte_pool(width: int, n=2, block=2, dtype=torch.uint8) -> torch.Tensor:
    return torch.zeros(n, block, width, dtype=torch.uint8).view(dtype)


def bf16_pool(D: int, n=2, block=2) -> torch.Tensor:
    return torch.zeros(n, block, D, dtype=torch.bfloat16)


def fp8_pool(D: int, dtype=torch.float8_e4m3fn, n=2, block=2) -> torch.Tensor:
    return torch.zeros(n, block, D, dtype=dtype)


SCALES = {"ori_kv_scale": torch.tensor([0.5]), "cmp_kv_scale": torch.tensor([2.0])}


def test_byte_pools_of_each_format_validate():
    for name, fmt in FORMATS.items():
        pool = byte_pool(fmt.row_bytes, dtype=fmt.pool_dtype)
        i = v1.validate(**v1_kwargs(fmt.D, pool, pool.clone()))
        assert i.kv_format == name and i.D_v == fmt.d_v
        i = v2.validate(**v2_kwargs(fmt.D, pool, pool.clone()))
        assert i.kv_format == name and i.D_v == fmt.d_v


ERRORS = [
    ("row size of no format", 576, byte_pool(600), byte_pool(600),
     r"ori_kv: expected uint8 rows of 656 \(fp8_ds_mla\), 584 \(fp8_ds_v4\) bytes, got rows "
     r"of 600 bytes"),
    ("cmp row size of no format", 576, byte_pool(656), byte_pool(655),
     r"cmp_kv: expected uint8 rows of .* got rows of 655 bytes"),
    ("format's D is not q's", 512, byte_pool(656), byte_pool(656),
     r"ori_kv: expected a pool whose key has q's D=512 dims; rows of 656 bytes are format "
     r"fp8_ds_mla, whose key has 576 dims"),
    ("v4's D is not q's", 576, byte_pool(584), byte_pool(584),
     r"ori_kv: expected a pool whose key has q's D=576 dims; .* format fp8_ds_v4, whose key "
     r"has 512 dims"),
    ("cmp_kv in another format (same D)", 576, bf16_pool(576), byte_pool(656),
     r"cmp_kv: expected the cache format of ori_kv \(bf16\), got format fp8_ds_mla"),
    ("cmp_kv in another format (bf16 after bytes)", 512, byte_pool(584), bf16_pool(512),
     r"cmp_kv: expected the cache format of ori_kv \(fp8_ds_v4\), got format bf16"),
    ("cmp_kv in another fp8 format", 576, byte_pool(656), byte_pool(584),
     r"cmp_kv: expected a pool whose key has q's D=576 dims; .* fp8_ds_v4"),
    ("float16 pool", 8, torch.zeros(2, 2, 8, dtype=torch.float16), bf16_pool(8),
     r"ori_kv: expected dtype torch.bfloat16 \(format bf16\), torch.uint8 \(bytes of "
     r"fp8_ds_mla, fp8_ds_v4\) or torch.float8_e4m3fn \(fp8_e4m3\), torch.float8_e4m3fnuz "
     r"\(fp8_e4m3fnuz; or bytes of fp8_ds_mla_fnuz, fp8_ds_v4_fnuz\), got torch.float16"),
    ("float16 cmp pool", 8, bf16_pool(8), torch.zeros(2, 2, 8, dtype=torch.float16),
     r"cmp_kv: expected dtype torch.bfloat16 .* got torch.float16"),
    ("int8 pool", 576, torch.zeros(2, 2, 656, dtype=torch.int8), byte_pool(656),
     r"ori_kv: expected dtype .* got torch.int8"),
    ("bf16 rows of another D", 8, bf16_pool(9), bf16_pool(9),
     r"ori_kv: expected shape \[N, BLOCK, D=8\] \(format bf16: D values a row\), got shape "
     r"\(2, 2, 9\)"),
    ("fp8 rows of another D", 8, fp8_pool(8), fp8_pool(7),
     r"cmp_kv: expected shape \[N, BLOCK, D=8\] \(format fp8_e4m3: .* got shape \(2, 2, 7\)"),
    ("fnuz layout's D is not q's", 584, byte_pool(584, dtype=torch.float8_e4m3fnuz),
     byte_pool(584, dtype=torch.float8_e4m3fnuz),
     r"ori_kv: expected a pool whose key has q's D=584 dims; a torch.float8_e4m3fnuz pool of "
     r"584-byte rows is byte layout fp8_ds_v4_fnuz, whose key has 512 dims \(a per-tensor "
     r"pool of that dtype has D other than 656, 584\)"),
    ("cmp_kv in the other code dtype of one layout", 512, byte_pool(584),
     byte_pool(584, dtype=torch.float8_e4m3fnuz),
     r"cmp_kv: expected the cache format of ori_kv \(fp8_ds_v4\), got format fp8_ds_v4_fnuz"),
    ("fnuz layout's rows read as e4m3fn-typed", 512, byte_pool(584, dtype=torch.float8_e4m3fn),
     byte_pool(584, dtype=torch.float8_e4m3fn),
     r"ori_kv: expected shape \[N, BLOCK, D=512\] \(format fp8_e4m3: D values a row\)"),
    ("cmp_kv of the other per-tensor dtype", 8, fp8_pool(8),
     fp8_pool(8, torch.float8_e4m3fnuz),
     r"cmp_kv: expected the cache format of ori_kv \(fp8_e4m3\), got format fp8_e4m3fnuz"),
]


@pytest.mark.parametrize("convention", ["v1", "v2"])
@pytest.mark.parametrize("what, D, ori, cmp, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_pool_errors_are_named(convention, what, D, ori, cmp, message):
    make, front = (v1_kwargs, v1) if convention == "v1" else (v2_kwargs, v2)
    scales = SCALES if formats.of_pool(ori) in formats.PER_TENSOR else {}
    with pytest.raises(ContractError, match=message) as info:
        front.validate(**make(D, ori, cmp), **scales)
    # the argument, what was expected, then what came (the pattern names the value got)
    name = message.split(":")[0].replace("\\", "")
    assert str(info.value).startswith(f"{name}: expected "), str(info.value)


@pytest.mark.parametrize("name, last, want", [("fp8_ds_mla", 576, 512), ("fp8_ds_mla", 511, 512),
                                              ("fp8_ds_v4", 576, 512)])
def test_output_of_the_wrong_value_dims_is_named(name, last, want):
    fmt = FORMATS[name]
    pool = byte_pool(fmt.row_bytes)
    i = v1.validate(**v1_kwargs(fmt.D, pool, pool))
    assert i.D_v == want
    v1.validate_output(torch.zeros(1, 1, 2, want), i)
    with pytest.raises(ContractError, match=rf"kernel output: expected shape \[1, 1, 2, {want}\] "
                       rf"\(\[B, S, H, D_v\]\), got shape \[1, 1, 2, {last}\]"):
        v1.validate_output(torch.zeros(1, 1, 2, last), i)
    i = v2.validate(**v2_kwargs(fmt.D, pool, pool))
    with pytest.raises(ContractError, match=rf"kernel output: expected shape \[2, 2, {want}\] "
                       rf"\(\[T, H, D_v\]\), got shape \[2, 2, {last}\]"):
        v2.validate_output(torch.zeros(2, 2, last), i)


# -- the quantiser -------------------------------------------------------------------------------


def finite_codes(fmt) -> torch.Tensor:
    return torch.tensor([c for c in range(256) if c not in fmt.nan_codes], dtype=torch.uint8)


@settings(max_examples=25, derandomize=True, deadline=None, database=None)
@given(name=st.sampled_from(sorted(FORMATS)), power_of_two=st.booleans(),
       seed=st.integers(0, 2**32 - 1), exp_lo=st.integers(-100, 100),
       spread=st.integers(0, 20))
def test_quantise_round_trips_rows_exact_in_e4m3(name, power_of_two, seed, exp_lo, spread):
    """bf16 rows whose every group is codes times one power of two (the largest code's
    value, 448 or 240, in each group, so that a float32 amax / max scale is that power too)
    decode back exactly, the RoPE tail as given."""
    fmt = FORMATS[name]
    gen = torch.Generator().manual_seed(seed)
    n = 6
    finite = finite_codes(fmt)
    codes = finite[torch.randint(0, len(finite), (n, fmt.nope), generator=gen)]
    vals = fmt.code_values(codes).reshape(n, fmt.groups, fmt.group)
    vals[..., 0] = torch.where(torch.rand(n, fmt.groups, generator=gen) < 0.5, fmt.max, -fmt.max)
    vals[1] = 0.0  # an all-zero row
    k = torch.randint(exp_lo, exp_lo + spread + 1, (n, fmt.groups), generator=gen).clamp(-100, 100)
    nope = (vals * torch.exp2(k.double())[..., None]).reshape(n, fmt.nope)
    rope = (torch.randn(n, fmt.rope, generator=gen, dtype=torch.float64) * 100).to(torch.bfloat16)
    rows = torch.cat([nope.to(torch.bfloat16), rope], dim=-1)
    assert torch.equal(rows[:, :fmt.nope].double(), nope), "the test's rows must be exact in bf16"
    recs = quantise(fmt, rows, power_of_two)
    assert recs.shape == (n, fmt.row_bytes) and recs.dtype == torch.uint8
    back = fmt.decode(recs)
    assert torch.equal(back, rows.double()), (back - rows.double()).abs().max()


# -- what the drawn pools reach ----------------------------------------------------------------------


REACH_DRAWS = int(os.environ.get("FORMATS_REACH_DRAWS", "40"))


def _subnormal(codes: torch.Tensor) -> torch.Tensor:
    return ((codes & 0x78) == 0) & ((codes & 0x07) != 0)


def _poisoned(fmt, recs: torch.Tensor) -> torch.Tensor:
    """Per record: its decode is non-finite, or a scale is NaN, infinite or huge."""
    s = fmt.scales(recs)
    bad_scale = ~s.isfinite() | (s >= 2.0**100)
    return ~fmt.decode(recs).isfinite().all(dim=-1) | bad_scale.any(dim=-1)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_drawn_pools_reach_the_edges(name):
    """Over REACH_DRAWS drawn cases in format `name`, the rows some live lane reads hold
    subnormal codes, +-0 (where the codes have -0), the largest codes of either sign, scales beyond 2^+-100 (float32 subnormals for fp8_ds_mla)
    in raw groups, and every row no live lane reads is poisoned."""
    kernel = KernelUnderTest.of("reference-v2", sparse_attn_v2)
    # small calls (few tokens, heads and rows) so that 200 draws stay fast: the bytes of
    # each row are drawn alike whatever the call's size
    small = Preconditions(dims={"B": (1, 2), "S": (1, 2), "H": (1, 2), "WIN": (1, 2, 4),
                                "IDX_TOPK": (1, 2, 4), "BLOCK": (1, 2, 4)})
    kernel = dataclasses.replace(kernel, kv_formats=(name,), pre=small)
    fmt = FORMATS[name]
    # the codes of +-0 (e4m3fnuz has no -0: 0x80 is its NaN) and of the largest values
    edges = {"+0": 0x00, "-0": 0x80, "+max": fmt.largest, "-max": fmt.largest | 0x80}
    if 0x80 in fmt.nan_codes:
        del edges["-0"]
    seen: dict[str, int] = dict.fromkeys(
        ["subnormal", *edges, "tiny scale", "huge scale", "raw", "unread rows"], 0)

    @settings(max_examples=REACH_DRAWS, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def draw(data):
        case = draw_case(data, kernel)
        assert case.kv_format == name
        i = case.inputs
        keeps = v2.addressed_rows(i)
        for pool, keep in zip((i.ori_kv, i.cmp_kv), keeps, strict=True):
            assert formats.of_pool(pool) == name
            recs = formats.records(pool)
            live, dead = recs[keep], recs[~keep]
            # every row no live lane reads is poisoned
            bad = _poisoned(fmt, dead)
            assert bool(bad.all()), f"{int((~bad).sum())} unread rows are not poisoned"
            seen["unread rows"] += len(dead)
            # live rows are finite, with finite scales
            assert bool(fmt.decode(live).isfinite().all()), "a live row decodes non-finite"
            codes = fmt.codes(live)
            seen["subnormal"] += int(_subnormal(codes).sum())
            for label, c in edges.items():
                seen[label] += int((codes == c).sum())
            scales = fmt.scales(live)
            if case.fp8_regime != "quantised":
                seen["raw"] += 1
                if fmt.scale == "ue8m0":
                    seen["tiny scale"] += int((scales < 2.0**-100).sum())
                    seen["huge scale"] += int((scales > 2.0**100).sum())
                else:
                    seen["tiny scale"] += int((scales < 2.0**-126).sum())  # float32 subnormal
                    seen["huge scale"] += int((scales > 2.0**100).sum())

    draw()
    missing = [k for k, v in seen.items() if v == 0]
    assert not missing, f"{name}: {REACH_DRAWS} draws never reached {missing}: {seen}"
