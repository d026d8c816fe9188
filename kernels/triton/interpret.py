"""Triton's CPU interpreter (`TRITON_INTERPRET=1`) made to compute bf16 as a GPU does, for
kernels under test: nothing else.

Two things the interpreter of the checked triton versions gets wrong, each of which a
conformance run would otherwise report as a bug of a correct kernel:

- `tl.dot` on bf16 operands: the interpreter stores bf16 as raw `uint16` bit patterns and
  hands them to `np.matmul` as integers, so `1.0 * 1.0` (bits `0x3F80`) comes out as
  `16256**2 = 264257536` (triton-lang/triton#11584, closed unfixed). A GPU multiplies the
  values exactly and accumulates in fp32.
- fp32 -> bf16 casts (`x.to(tl.bfloat16)`, a store of fp32 into a bf16 pointer) truncate
  the mantissa; a GPU's `fptrunc` rounds to nearest even (1 + 3 * 2**-9 becomes 1.0 in the
  interpreter, 1.0078125 on a GPU). An explicit `fp_downcast_rounding="rtne"` rounds half
  up and lets a carry out of the mantissa fall off.

`install()` replaces those three builder methods of `triton.runtime.interpreter` (once;
later calls do nothing), and the replacements take effect only inside `faithful()` (a
context variable): outside it, and for every other dtype, the interpreter's own code
runs. Nothing here runs at import: the suite patches the interpreter only when a Triton
kernel under test runs on the CPU (`kernels.triton.kernel` for the built-in kernel, the
registry for a user's `module:callable` when `TRITON_INTERPRET=1` is set).

Checked against the triton versions in `CHECKED`; `install()` refuses any other version,
and tests/test_triton_interpret.py fails when the fix stops applying or is no longer needed.
What stays different from a GPU is in the README ("Triton kernels: on a laptop and on a GPU").
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np
import torch

#: triton versions this fix was checked on (the interpreter's builder methods it replaces
#: and the wrong results it corrects).
CHECKED = ("3.9.0",)

_active = contextvars.ContextVar("sparse_attn_faithful_interpreter", default=False)
_MARK = "_sparse_attn_faithful"


class InterpreterFixError(RuntimeError):
    """The interpreter fix cannot be applied to this triton."""


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 stored as uint16 bit patterns -> the exact fp32 values."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray, rounding: str = "rtne") -> np.ndarray:
    """fp32 -> bf16 bit patterns (uint16), rounded to nearest even (as a GPU's `fptrunc`,
    and torch, round) or toward zero (`"rtz"`); NaN stays a quiet NaN of the same sign."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    if rounding == "rtne":
        lsb = (bits >> np.uint32(16)) & np.uint32(1)
        rounded = (bits + np.uint32(0x7FFF) + lsb) >> np.uint32(16)
    elif rounding == "rtz":
        rounded = bits >> np.uint32(16)
    else:
        raise ValueError(f"rounding: expected 'rtne' or 'rtz', got {rounding!r}")
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    quiet = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(nan, quiet, rounded).astype(np.uint16)


@contextlib.contextmanager
def faithful():
    """Inside: the interpreter computes bf16 `tl.dot` and bf16 casts as a GPU does
    (`install()` must have run)."""
    token = _active.set(True)
    try:
        yield
    finally:
        _active.reset(token)


def is_installed() -> bool:
    from triton.runtime import interpreter

    return getattr(interpreter.InterpreterBuilder.create_dot, _MARK, False)


def install() -> None:
    """Replace the interpreter's bf16 dot and cast methods (idempotent). Raises
    `InterpreterFixError` on a triton version not in `CHECKED` or one whose interpreter no
    longer has the methods replaced."""
    import triton
    from triton import language as tl
    from triton.runtime import interpreter

    if triton.__version__ not in CHECKED:
        raise InterpreterFixError(
            f"triton {triton.__version__}: the interpreter's bf16 fix (kernels/triton/interpret.py) "
            f"was checked only on triton {', '.join(CHECKED)}; check whether its bf16 tl.dot and "
            f"fp32 -> bf16 casts are still wrong (tests/test_triton_interpret.py) and add the version")
    builder = interpreter.InterpreterBuilder
    if is_installed():
        return
    for name in ("create_dot", "cast_impl", "create_fp_to_fp"):
        if not callable(getattr(builder, name, None)):
            raise InterpreterFixError(
                f"triton {triton.__version__}: InterpreterBuilder.{name} is gone; the fix no longer applies")
    TensorHandle = interpreter.TensorHandle
    bf16, f32 = tl.bfloat16, tl.float32
    rtne = interpreter._ir.ROUNDING_MODE.RTNE
    orig_dot, orig_cast, orig_fp_to_fp = builder.create_dot, builder.cast_impl, builder.create_fp_to_fp

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if not _active.get() or not (a.dtype.scalar == bf16 or b.dtype.scalar == bf16):
            return orig_dot(self, a, b, d, input_precision, max_num_imprecise_acc)
        if a.dtype.scalar != b.dtype.scalar:
            raise TypeError(f"tl.dot of {a.dtype.scalar} and {b.dtype.scalar}: expected equal operand dtypes")
        # bf16 products are exact in fp32; the accumulator is fp32 (a bf16 one is rounded once)
        # torch's matmul, not numpy's: it keeps to the suite's torch thread share per worker,
        # where numpy's multithreaded BLAS stalls for milliseconds a call on a loaded machine
        prod = torch.matmul(torch.from_numpy(bf16_bits_to_f32(a.data)),
                            torch.from_numpy(bf16_bits_to_f32(b.data))).numpy()
        if d.dtype.scalar == bf16:
            out = f32_to_bf16_bits(prod + bf16_bits_to_f32(d.data))
        else:
            out = (prod + d.data.astype(np.float32)).astype(d.data.dtype)
        return TensorHandle(out, d.dtype.scalar)

    def cast_impl(self, src, dst_type):
        pair = (src.dtype.scalar, dst_type.scalar)
        if _active.get() and pair == (f32, bf16):
            return TensorHandle(f32_to_bf16_bits(src.data), bf16)
        if _active.get() and pair == (bf16, f32):
            return TensorHandle(bf16_bits_to_f32(src.data), f32)
        return orig_cast(self, src, dst_type)

    def create_fp_to_fp(self, src, dst_type, rounding_mode):
        if _active.get() and (src.dtype.scalar, dst_type.scalar) == (f32, bf16):
            mode = "rtne" if rounding_mode == rtne else "rtz"
            return TensorHandle(f32_to_bf16_bits(src.data, mode), bf16)
        return orig_fp_to_fp(self, src, dst_type, rounding_mode)

    for fn in (create_dot, cast_impl, create_fp_to_fp):
        setattr(fn, _MARK, True)
    builder.create_dot, builder.cast_impl, builder.create_fp_to_fp = create_dot, cast_impl, create_fp_to_fp


class FaithfulKernel:
    """A user's kernel (`module:callable`) run under `TRITON_INTERPRET=1`: each call inside
    `faithful()`, so that the Triton kernels it launches compute bf16 as on a GPU. Every
    other attribute (preconditions, available(), ...) is the kernel's own."""

    def __init__(self, fn):
        install()
        self.__wrapped__ = fn

    def __call__(self, **kw):
        with faithful():
            return self.__wrapped__(**kw)

    def __getattr__(self, name):
        return getattr(self.__dict__["__wrapped__"], name)

    def __repr__(self) -> str:
        return f"FaithfulKernel({self.__wrapped__!r})"


def for_kernel_under_test(fn):
    """`fn` as the suite should call it: wrapped in `FaithfulKernel` when it runs through
    Triton's interpreter (`TRITON_INTERPRET=1` set and triton imported by its module),
    else `fn` itself."""
    import os
    import sys

    interpret = (os.environ.get("TRITON_INTERPRET") or "").strip().lower() in ("1", "true", "yes", "on")
    if not interpret or "triton" not in sys.modules:
        return fn
    return FaithfulKernel(fn)
