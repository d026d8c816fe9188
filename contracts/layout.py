"""How a tensor argument is presented in memory.

The contract hands a kernel CPU torch tensors; it does not promise they are contiguous. A
kernel that reads `data_ptr()` as a row-major array, or ignores a storage offset, is wrong
on a view. `present` builds, from a canonical tensor, a fresh tensor with exactly the same
values, shape and dtype, laid out one of the ways in `KINDS`:

- ``contiguous``: a plain row-major copy (storage offset 0).
- ``offset``: row-major, but at a non-zero storage offset inside a larger buffer
  (``out.is_contiguous()`` holds, ``out.storage_offset() != 0`` tells it apart).
- ``strided``: gaps between elements along the last dimension of size > 1 (the last
  dimension unless it has size 1): a larger buffer sliced with a step. Not contiguous.
- ``transposed``: dense, but stored with the two innermost dimensions of size > 1 swapped
  and permuted back to the contract's shape (a `.transpose` view). Not contiguous.
- ``expanded``: stride 0 along every dimension of size > 1 along which the values are
  constant (bitwise): one stored copy, `expand`-ed. Not contiguous.
- ``column_major``: dense, stored with all dimensions in reverse order (Fortran order).
  Not contiguous; applies to tensors with at least three dimensions of size > 1 (with two it
  would be `transposed`).

Every kind other than ``contiguous`` gives ``not out.is_contiguous()`` or
``out.storage_offset() != 0``; the kinds that do not apply to a tensor (see
`applicable_kinds`) are refused with a `ValueError`, never replaced by another silently. The
unused parts of the larger buffers hold poison: NaN for floating tensors, the tensor's own
values out of place for integer ones (plausible but wrong indices, so a kernel that reads
them gives a wrong answer rather than an out-of-bounds access).
"""

from __future__ import annotations

import math
import random

import torch

#: The layouts a tensor argument may be presented in; ``contiguous`` first (the default).
KINDS = ("contiguous", "offset", "strided", "transposed", "expanded", "column_major")

_OFFSETS = (1, 3, 5, 17)   # odd: misaligned for any vector width
_STEPS = (2, 3)
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _big_dims(t: torch.Tensor) -> list[int]:
    return [d for d in range(t.dim()) if t.shape[d] > 1]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """`t` reinterpreted as integers of the same width (so NaN == NaN and -0.0 != 0.0)."""
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        return t.view(_BITS[t.element_size()])
    return t


def constant_dims(t: torch.Tensor) -> list[int]:
    """Dimensions of size > 1 along which `t`'s values are bitwise constant."""
    bits = _bits(t)
    return [d for d in _big_dims(t)
            if torch.equal(bits, bits.narrow(d, 0, 1).expand_as(bits))]


def why_not(t: torch.Tensor, kind: str) -> str | None:
    """Why `kind` does not apply to `t`, in words; None when it does."""
    if kind not in KINDS:
        return f"unknown layout kind {kind!r}, expected one of {KINDS}"
    if t.numel() == 0 and kind not in ("contiguous", "offset"):
        return "it has no elements, so any strides would still be contiguous"
    big = _big_dims(t)
    if kind == "strided" and not big:
        return "it has at most one element, so any strides would still be contiguous"
    if kind == "transposed" and len(big) < 2:
        return (f"fewer than two dimensions of size > 1 in shape {tuple(t.shape)}: "
                "any dimension order would still be contiguous")
    if kind == "column_major" and len(big) < 3:
        return (f"fewer than three dimensions of size > 1 in shape {tuple(t.shape)} "
                "(column-major would be contiguous or the same as transposed)")
    if kind == "expanded" and not constant_dims(t):
        return (f"its values are not constant along any dimension of size > 1 "
                f"(shape {tuple(t.shape)}), so no stride can be 0")
    return None


def applicable_kinds(t: torch.Tensor) -> tuple[str, ...]:
    """The kinds `present` accepts for `t`, in `KINDS` order (``contiguous`` and ``offset``
    always; ``expanded`` depends on the values)."""
    return tuple(k for k in KINDS if why_not(t, k) is None)


def _poison(shape, like: torch.Tensor) -> torch.Tensor:
    n = math.prod(shape)
    if like.dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=like.dtype)
    flat = like.reshape(-1).flip(0)
    if flat.numel() == 0:
        return torch.zeros(shape, dtype=like.dtype)
    return flat.repeat(-(-n // flat.numel()))[:n].reshape(shape).clone()


def present(t: torch.Tensor, kind: str, gen: random.Random | None = None, *,
            name: str = "tensor") -> torch.Tensor:
    """A fresh tensor (sharing no memory with `t`) with exactly `t`'s values, shape and dtype,
    laid out as `kind` (see the module docstring).

    gen: varies the details (the offset, the step, which dimensions are swapped or
        expanded); without it they are fixed, so the same call gives the same layout.
    name: the argument's name, for the error message.

    Raises ValueError naming `name` and `kind` when `kind` is unknown or does not apply to
    `t` (see `applicable_kinds`).
    """
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: layout {kind!r} needs a torch.Tensor, got {type(t).__name__}")
    reason = why_not(t, kind)
    if reason is not None:
        raise ValueError(f"{name}: layout {kind!r} does not apply: {reason}")
    shape = tuple(t.shape)
    if kind == "contiguous":
        return t.clone(memory_format=torch.contiguous_format)
    if kind == "offset":
        off = gen.choice(_OFFSETS) if gen else 3
        buf = _poison((off + t.numel(),), t)
        out = buf[off:].view(shape)
        return out.copy_(t)
    if kind == "strided":
        step = gen.choice(_STEPS) if gen else 2
        d = _big_dims(t)[-1]
        big = list(shape)
        big[d] *= step
        index = (slice(None),) * d + (slice(None, None, step),)
        out = _poison(big, t)[index]
        return out.copy_(t)
    if kind in ("transposed", "column_major"):
        if kind == "column_major":
            perm = list(reversed(range(t.dim())))
        else:
            big = _big_dims(t)
            a, b = (sorted(gen.sample(big, 2)) if gen else big[-2:])
            perm = list(range(t.dim()))
            perm[a], perm[b] = b, a
        # perm is its own inverse (a swap or a reversal)
        out = torch.empty([shape[p] for p in perm], dtype=t.dtype).permute(perm)
        return out.copy_(t)
    assert kind == "expanded"
    dims = constant_dims(t)
    if gen:
        dims = gen.sample(dims, gen.randint(1, len(dims)))
    base = t
    for d in dims:
        base = base.narrow(d, 0, 1)
    return base.clone(memory_format=torch.contiguous_format).expand(shape)


def describe(t: torch.Tensor) -> str:
    """`t`'s memory layout in words: shape, strides and storage offset."""
    return (f"shape {tuple(t.shape)} strides {t.stride()} offset {t.storage_offset()}"
            f"{'' if t.is_contiguous() else ' (non-contiguous)'}")
