"""What a kernel that returns the LSE beside the output declares about it (docs/contract.md
section 13); `attention.lse` computes and compares it."""

from __future__ import annotations

from dataclasses import dataclass

from sparse_attn_conformance.contracts.checks import ContractError


@dataclass(frozen=True)
class LSE:
    """What a kernel's returned LSE `[*tokens, H]` is (docs/contract.md section 13).

    base: "e" (natural log) or "2" (log2, as FlashMLA-style kernels keep it).
    with_sink: whether the sink's `exp(attn_sink[h])` is in the sum.
    empty: the value for a token with no live row: None (default) for the formula's own,
        `log(0) = -inf` without the sink and `attn_sink[h]` with it; or the kernel's
        documented sentinel (FlashMLA's sparse decode: +inf).
    """

    base: str = "e"
    with_sink: bool = False
    empty: float | None = None

    def __post_init__(self):
        if self.base not in ("e", "2"):
            raise ContractError(f"LSE.base: expected 'e' or '2', got {self.base!r}")
        if not isinstance(self.with_sink, bool):
            raise ContractError(f"LSE.with_sink: expected a bool, got {self.with_sink!r}")
        if self.empty is not None and (not isinstance(self.empty, (int, float))
                                       or isinstance(self.empty, bool)):
            raise ContractError(f"LSE.empty: expected a float (-inf, +inf or a sentinel), "
                                f"got {self.empty!r}")
