"""Per-token positions (`position_ids`): as the model writes them (batch `b` starts at
`start_pos[b]`, token `s` sits at `start_pos[b] + s`), and adversarial ones (a batch's
tokens at unrelated positions, or all at one position).

Start positions come from regimes that reach the places kernels get wrong: an empty cache,
short contexts, the window's edge, `pos + 1` at and beside multiples of the ratio, long
context (slot ids past 2^15 and 2^16) and, occasionally, far positions up to the kernel's
`max_position` or int32. Hypothesis draws the featured batches' values (they shrink); a
seeded generator draws the rest.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from contracts.v2 import INT32_MAX
from strategies.lengths import FEATURED, LONG_CONTEXT_MAX, LONG_CONTEXT_MIN
from strategies.v2.config import Config

#: Regimes of a batch's start position, in shrinking order.
START_REGIMES = ("empty", "small", "around_window", "ratio_edge", "long", "far")
#: How an adversarial call's tokens are placed within a batch.
TOKEN_PLACEMENTS = ("model", "unrelated", "equal", "shuffled")


def last_start(cfg: Config, max_position: int | None) -> int:
    """The largest start position whose batch stays within `max_position` (or int32)."""
    top = INT32_MAX if max_position is None else min(max_position, INT32_MAX)
    hi = top - (cfg.S - 1)
    if hi < 0:
        raise ValueError(f"positions: max_position expected >= S - 1 = {cfg.S - 1} (a batch's "
                         f"tokens sit at start_pos + s), got {max_position}")
    return hi


def _range(regime: str, cfg: Config, hi: int) -> tuple[int, int]:
    """The start positions of `regime`, clipped to `[0, hi]` (falls back to `[0, hi]`)."""
    win = cfg.WIN
    lo_hi = {
        "empty": (0, 0),
        "small": (0, 2 * win + cfg.S),
        "around_window": (max(0, win - cfg.S - 2), win + 2),
        "long": (LONG_CONTEXT_MIN, LONG_CONTEXT_MAX),
        "far": (LONG_CONTEXT_MAX, hi),
    }[regime]
    lo, top = lo_hi[0], min(lo_hi[1], hi)
    return (lo, top) if lo <= top else (0, hi)


def _start(draw, b: int, cfg: Config, gen: torch.Generator, hi: int, regime: str) -> int:
    """Batch `b`'s start position in `regime`: Hypothesis draws it for a featured batch."""
    if regime == "ratio_edge":
        # pos + 1 at a multiple of r for some token of the batch, or just beside one
        r = cfg.cut
        k_hi = max(0, min(LONG_CONTEXT_MAX, hi) // r)
        if b < FEATURED:
            k = draw(st.integers(0, k_hi), label=f"ratio_multiple[{b}]")
            j = draw(st.integers(-1, cfg.S + 1), label=f"ratio_offset[{b}]")
        else:
            k = int(torch.randint(0, k_hi + 1, (1,), generator=gen))
            j = int(torch.randint(-1, cfg.S + 2, (1,), generator=gen))
        return min(hi, max(0, k * r - 1 - j))
    lo, top = _range(regime, cfg, hi)
    if b < FEATURED:
        return draw(st.integers(lo, top), label=f"start_pos[{b}]")
    return int(torch.randint(lo, top + 1, (1,), generator=gen))


@st.composite
def start_positions(draw, cfg: Config, gen: torch.Generator, max_position: int | None = None,
                    far: bool = True) -> tuple[int, ...]:
    """One start position per batch, each from a drawn `START_REGIMES` regime (featured
    batches: Hypothesis; the rest: `gen`), so that `start_pos + S - 1 <= max_position`.
    far: allow the "far" regime (positions past 2^17, up to `max_position` or int32)."""
    hi = last_start(cfg, max_position)
    regimes = START_REGIMES if far else START_REGIMES[:-1]
    out = []
    for b in range(cfg.B):
        if b < FEATURED:
            regime = draw(st.sampled_from(regimes), label=f"start_regime[{b}]")
        else:
            regime = regimes[int(torch.randint(len(regimes), (1,), generator=gen))]
        out.append(_start(draw, b, cfg, gen, hi, regime))
    return tuple(out)


def model_positions(start_pos, S: int) -> torch.Tensor:
    """`position_ids` `[T, 1]` int32 as the model writes them: `start_pos[b] + s`."""
    start = torch.as_tensor(list(start_pos), dtype=torch.int64)
    if start.dim() != 1 or S < 1:
        raise ValueError(f"model_positions: expected a sequence of start positions and S >= 1, "
                         f"got start_pos of shape {tuple(start.shape)} and S={S}")
    pos = start[:, None] + torch.arange(S, dtype=torch.int64)[None, :]
    if bool((start < 0).any()) or bool((pos > INT32_MAX).any()):
        raise ValueError(f"model_positions: start_pos expected in [0, {INT32_MAX} - (S - 1)], "
                         f"got {start.tolist()} with S={S}")
    return pos.reshape(-1, 1).to(torch.int32)


@st.composite
def adversarial_positions(draw, cfg: Config, gen: torch.Generator,
                          max_position: int | None = None, far: bool = True,
                          placements: tuple[str, ...] = TOKEN_PLACEMENTS):
    """`(position_ids [T, 1] int32, placement)`: per batch a placement from
    `TOKEN_PLACEMENTS`: "model" (start + s), "unrelated" (each token at its own start
    regime), "equal" (every token of the batch at one position) or "shuffled" (the model's
    positions in another order); `placements` restricts them."""
    hi = last_start(cfg, max_position)
    top = hi + cfg.S - 1
    bad = [p for p in placements if p not in TOKEN_PLACEMENTS]
    if not placements or bad:
        raise ValueError(f"placements: expected a non-empty subset of {TOKEN_PLACEMENTS}, "
                         f"got {placements!r}")
    placement = draw(st.sampled_from(placements), label="placement")
    starts = draw(start_positions(cfg, gen, max_position, far), label="starts")
    pos = model_positions(starts, cfg.S).reshape(cfg.B, cfg.S).to(torch.int64)
    if placement == "unrelated":
        one = Config(**{**cfg.__dict__, "B": cfg.T, "S": 1})
        pos = torch.tensor(draw(start_positions(one, gen, top, far), label="token_pos"),
                           dtype=torch.int64).reshape(cfg.B, cfg.S)
    elif placement == "equal":
        pos = pos[:, :1].expand(cfg.B, cfg.S)
    elif placement == "shuffled":
        pos = torch.stack([row[torch.randperm(cfg.S, generator=gen)] for row in pos])
    return pos.reshape(-1, 1).to(torch.int32), placement
