"""What every convention's `Inputs` shares: one call's arguments as canonical CPU tensors,
and how `kwargs()` presents each tensor in memory (`layout`, kinds from `contracts.layout`).

A convention's `Inputs` is a frozen dataclass with this mixin, a class attribute
`ARGUMENTS` (its keyword arguments, in contract order), fields `ori_kv_scale` and
`cmp_kv_scale` (None unless the pools are per-tensor FP8, section 12) and a field `layout`;
its `__post_init__` calls `_normalise_layout()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from sparse_attn_conformance.contracts.checks import ContractError


class LaidOut:
    """Layout checking, `kwargs()` and `replace()` for a convention's `Inputs`."""

    ARGUMENTS: tuple[str, ...] = ()

    def _normalise_layout(self) -> None:
        from sparse_attn_conformance.contracts.layout import KINDS, why_not

        layout = self.layout
        if not isinstance(layout, Mapping):
            raise ContractError(f"Inputs.layout: expected a mapping from argument name to "
                                f"layout kind, got {type(layout).__name__}")
        tensors = self.tensor_arguments()
        for key, kind in layout.items():
            if key not in tensors:
                raise ContractError(f"Inputs.layout: expected keys among the tensor arguments "
                                    f"{tensors}, got {key!r}")
            if kind not in KINDS:
                raise ContractError(f"Inputs.layout[{key!r}]: expected a layout kind among "
                                    f"{KINDS}, got {kind!r}")
            reason = why_not(getattr(self, key), kind)
            if reason is not None:
                raise ContractError(f"Inputs.layout[{key!r}]: expected a kind that applies to "
                                    f"{key}, got {kind!r}: {reason}")
        normal = {a: layout[a] for a in self.call_arguments()
                  if layout.get(a, "contiguous") != "contiguous"}
        object.__setattr__(self, "layout", normal)

    @property
    def kv_format(self) -> str:
        """The pools' cache format (`contracts.formats`, docs/contract.md section 12)."""
        from sparse_attn_conformance.contracts import formats

        return formats.of_pool(self.ori_kv)

    @property
    def D_v(self) -> int:
        """The output's last dim: D, or the format's value dims (512 of 576 in fp8_ds_mla)."""
        from sparse_attn_conformance.contracts import formats

        return formats.value_dims(self.kv_format, self.D)

    def call_arguments(self) -> tuple[str, ...]:
        """The call's keyword arguments, in contract order: `ARGUMENTS`, then the pools'
        scales where they are per-tensor FP8 (`contracts.formats.SCALE_ARGUMENTS`)."""
        from sparse_attn_conformance.contracts import formats

        return self.ARGUMENTS + tuple(a for a in formats.SCALE_ARGUMENTS
                                      if getattr(self, a, None) is not None)

    def pool_scale(self, pool: str):
        """The per-tensor scale of pool `pool` (`"ori_kv"`/`"cmp_kv"`) as a float64 tensor
        `[]`, or None for a pool that carries its scales (or has none)."""
        scale = getattr(self, f"{pool}_scale", None)
        return None if scale is None else scale.reshape(()).double()

    def tensor_arguments(self) -> tuple[str, ...]:
        """The names of the arguments that are tensors, in contract order."""
        return tuple(a for a in self.call_arguments()
                     if isinstance(getattr(self, a), torch.Tensor))

    def _repr_pretty_(self, p, cycle) -> None:  # Hypothesis prints draws with this
        p.text(repr(self))

    def kwargs(self) -> dict:
        """Keyword arguments for a kernel call (exactly `call_arguments()`). Tensors are fresh
        buffers of their own, presented in `layout` (`contracts.layout.present`), so a kernel
        that writes into an argument changes nothing here."""
        from sparse_attn_conformance.contracts.layout import present

        out = {}
        for name in self.call_arguments():
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                value = present(value, self.layout.get(name, "contiguous"), name=name)
            out[name] = value
        return out

    def replace(self, **changes):
        """A copy with `changes`. Without a new `layout` the layout is kept, except for an
        entry whose kind no longer applies to its replaced tensor (a new shape, or values no
        longer constant for ``expanded``): that argument becomes contiguous."""
        if "layout" not in changes and self.layout:
            from sparse_attn_conformance.contracts.layout import why_not

            changes["layout"] = {
                a: k for a, k in self.layout.items()
                if a not in changes or not isinstance(changes[a], torch.Tensor)
                or why_not(changes[a], k) is None}
        return replace(self, **changes)

    def _laid(self) -> str:
        laid = "".join(f", {a}: {k}" for a, k in self.layout.items())
        return f", non-contiguous{laid}" if laid else ""
