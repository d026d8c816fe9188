"""What a token attends to: the one description every calling convention maps onto."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Attended:
    """Per token, the multiset of live rows it attends to (docs/contract.md section 3).

    q: `[*tokens, H, D]` bf16, the tokens' queries.
    rows: `[*tokens, L, D]`, one row per lane (an index entry): bf16 as a bf16 pool holds
        it, or float64, the exact value of a row of an FP8 cache (contracts.formats); a
        lane that is not live holds a zero row, whatever its address would hold, so an
        unread row's NaN or inf cannot reach the output. A row is the key; its first `d_v`
        dims are the value.
    live: `[*tokens, L]` bool, which lanes count. A row that appears in two live lanes
        counts twice; the order of lanes does not matter.
    attn_sink: `[H]` fp32, softmax_scale: the score scale.
    token_dims: the names of the leading token dimensions, for messages: ("b", "s") in v1,
        ("t",) in v2.
    d_v: the value's dims (None: all D; 512 of 576 in format fp8_ds_mla).
    """

    q: torch.Tensor
    rows: torch.Tensor
    live: torch.Tensor
    attn_sink: torch.Tensor
    softmax_scale: float
    token_dims: tuple[str, ...]
    d_v: int | None = None

    def __post_init__(self):
        n = len(self.token_dims)
        if self.q.dim() != n + 2 or self.rows.dim() != n + 2 or self.live.dim() != n + 1 \
                or self.rows.shape[:n] != self.q.shape[:n] \
                or self.live.shape != self.rows.shape[:-1] \
                or self.rows.shape[-1] != self.q.shape[-1]:
            raise ValueError(f"Attended: expected q [*tokens, H, D], rows [*tokens, L, D] and "
                             f"live [*tokens, L] with {n} token dims {self.token_dims}, got q "
                             f"{tuple(self.q.shape)}, rows {tuple(self.rows.shape)}, live "
                             f"{tuple(self.live.shape)}")

    @property
    def values(self) -> torch.Tensor:
        """`[*tokens, L, D_v]`: the value part of every lane's row."""
        return self.rows if self.d_v is None else self.rows[..., :self.d_v]

    @property
    def row_dims(self) -> tuple[str, ...]:
        """Names of an output row's index (tokens, then the head)."""
        return (*self.token_dims, "h")
