"""The checks both calling conventions' validators share; each raises `ContractError`
(contracts/errors.py) for input a convention does not allow."""

from __future__ import annotations

import math

from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.contracts.errors import ContractError


def expect(cond: bool, name: str, expected: str, got) -> None:
    """Raise `ContractError` naming `name`, what was `expected` and what it `got`, unless `cond`."""
    if not cond:
        raise ContractError(f"{name}: expected {expected}, got {got}")


def tensor(name: str, value, dtype, ndim: int):
    """`value`, checked to be a torch tensor of `dtype` with `ndim` dimensions."""
    import torch

    expect(isinstance(value, torch.Tensor), name, "a torch.Tensor", type(value).__name__)
    expect(value.dtype == dtype, name, f"dtype {dtype}", value.dtype)
    expect(value.dim() == ndim, name, f"{ndim} dimensions", f"shape {tuple(value.shape)}")
    return value


def python_int(name: str, value, lo: int) -> int:
    """`value`, checked to be a Python int (not a bool) `>= lo`."""
    expect(isinstance(value, int) and not isinstance(value, bool) and value >= lo,
           name, f"an int >= {lo}", repr(value))
    return value


def arguments(kw: dict, expected: tuple[str, ...]) -> None:
    """Exactly the keyword arguments `expected`, none missing and none more."""
    missing = [a for a in expected if a not in kw]
    extra = [a for a in kw if a not in expected]
    expect(not missing and not extra, "arguments", f"exactly {expected}",
           f"missing {missing}, unexpected {extra}")


def softmax_scale(value) -> float:
    """A finite Python number (not a bool), as a float."""
    expect(isinstance(value, (float, int)) and not isinstance(value, bool)
           and math.isfinite(value), "softmax_scale", "a finite python float", repr(value))
    return float(value)


def pools(kw: dict, D: int):
    """`(ori_kv, cmp_kv, BLOCK)`: both pools in one cache format (contracts.formats,
    docs/contract.md section 12): bf16 `[N >= 1, BLOCK, D]`, or uint8
    `[N >= 1, BLOCK, ROW_BYTES]` of a format whose key has `D` dims; one BLOCK."""
    fmt = formats.check_pool("ori_kv", kw["ori_kv"], D)
    ori_kv = kw["ori_kv"]
    width = ori_kv.shape[2]
    last = f"D={width}" if fmt == formats.BF16 else f"ROW_BYTES={width}"
    block = ori_kv.shape[1]
    expect(ori_kv.shape[0] >= 1 and block >= 1, "ori_kv",
           f"shape [N_ori >= 1, BLOCK >= 1, {last}]", f"shape {tuple(ori_kv.shape)}")
    cmp_fmt = formats.check_pool("cmp_kv", kw["cmp_kv"], D)
    cmp_kv = kw["cmp_kv"]
    expect(cmp_fmt == fmt, "cmp_kv", f"the cache format of ori_kv ({fmt})",
           f"format {cmp_fmt} (dtype {cmp_kv.dtype}, rows of {cmp_kv.shape[-1]})")
    expect(cmp_kv.shape[0] >= 1 and cmp_kv.shape[1:] == (block, width), "cmp_kv",
           f"shape [N_cmp >= 1, BLOCK={block}, {last}]", f"shape {tuple(cmp_kv.shape)}")
    return ori_kv, cmp_kv, block


def call_arguments(kw: dict, expected: tuple[str, ...]) -> None:
    """`arguments` for a convention's `expected`, plus the pools' scales when `ori_kv` is a
    per-tensor FP8 pool (`contracts.formats.SCALE_ARGUMENTS`, section 12)."""
    scales = formats.scale_arguments(kw.get("ori_kv"))
    missing = [a for a in expected + scales if a not in kw]
    extra = [a for a in kw if a not in expected + scales]
    why = (" (the pools are per-tensor FP8: each takes its scale)" if scales else
           " (scales belong to per-tensor FP8 pools only)" if set(extra) & set(
               formats.SCALE_ARGUMENTS) else "")
    expect(not missing and not extra, "arguments", f"exactly {expected + scales}{why}",
           f"missing {missing}, unexpected {extra}")


def pool_scales(kw: dict, fmt: str):
    """`(ori_kv_scale, cmp_kv_scale)` of pools in format `fmt`: each a float32 `[1]` tensor,
    finite and > 0, for a per-tensor FP8 format; `(None, None)` for any other."""
    if formats.per_tensor(fmt) is None:
        return None, None
    return tuple(formats.check_scale(a, kw[a]) for a in formats.SCALE_ARGUMENTS)


def attn_sink(kw: dict, H: int):
    """The sink: fp32 `[H]`, no NaN (`+inf` and `-inf` are allowed)."""
    import torch

    sink = tensor("attn_sink", kw["attn_sink"], torch.float32, 1)
    expect(tuple(sink.shape) == (H,), "attn_sink", f"shape [H={H}]", f"shape {tuple(sink.shape)}")
    expect(not torch.isnan(sink).any().item(), "attn_sink", "no NaN (+inf/-inf are allowed)",
           sink.tolist())
    return sink


def on_cpu(**tensors) -> None:
    """The contract hands kernels CPU tensors: the suite's own inputs must be on the CPU."""
    for name, t in tensors.items():
        expect(t.device.type == "cpu", name, "a CPU tensor", t.device)


def output(o, shape: tuple[int, ...], form: str):
    """A kernel's return value, checked to be a floating tensor of `shape` (named `form`,
    e.g. "[B, S, H, D]"), as a CPU fp32 tensor."""
    import torch

    expect(isinstance(o, torch.Tensor), "kernel output", "a torch.Tensor", type(o).__name__)
    expect(tuple(o.shape) == shape, "kernel output", f"shape {list(shape)} ({form})",
           f"shape {list(o.shape)}")
    expect(o.is_floating_point(), "kernel output", "a floating dtype", o.dtype)
    return o.detach().to("cpu", torch.float32)
