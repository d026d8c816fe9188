"""Per-token positions (`position_ids`): as the model writes them (batch `b` starts at
`start_pos[b]`, token `s` sits at `start_pos[b] + s`), and adversarial ones (a batch's
tokens at unrelated positions, or all at one position).

Start positions come from regimes that reach the places kernels get wrong: an empty cache,
short contexts, the window's edge, `pos + 1` at and beside multiples of the ratio, long
context (slot ids past 2^15 and 2^16), occasionally far positions up to the kernel's
`max_position` or int32, and `pos + 1` just below a multiple of r past 2^24, where fp32 (exact
only below 2^24) rounds it up to the multiple: a cut computed in fp32 lets the slot at the
true cut in. That last regime needs no wide table, so kernels that declare
`max_cmp_columns` (and get no edge cases) meet it too. Hypothesis draws the featured
batches' values (they shrink); a seeded generator draws the rest.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.contracts.v2 import INT32_MAX
from sparse_attn_conformance.strategies.lengths import FEATURED, LONG_CONTEXT_MAX, LONG_CONTEXT_MIN
from sparse_attn_conformance.strategies.v2.config import Config

#: Regimes of a batch's start position, in shrinking order.
START_REGIMES = ("empty", "small", "around_window", "ratio_edge", "long", "far", "fp32_cut")
#: Regimes that need positions past 2^17 (`far`): the last two.
FAR_REGIMES = ("far", "fp32_cut")
#: fp32 represents every integer below 2^24 exactly; "fp32_cut" places `k * r` just
#: past 2^p for p in this range (the spacing of fp32 there is 2^(p - 23)).
FP32_CUT_POWERS = (26, 30)
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


def _integer(draw, b: int, gen: torch.Generator, lo: int, hi: int, label: str) -> int:
    """An int in `[lo, hi]` for batch `b`: Hypothesis draws it for a featured batch (so it
    shrinks), `gen` for the rest."""
    if b < FEATURED:
        return draw(st.integers(lo, hi), label=f"{label}[{b}]")
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


def _start(draw, b: int, cfg: Config, gen: torch.Generator, hi: int, regime: str) -> int:
    """Batch `b`'s start position in `regime`: Hypothesis draws it for a featured batch."""
    if regime == "ratio_edge":
        # pos + 1 at a multiple of r for some token of the batch, or just beside one
        r = cfg.cut
        k_hi = max(0, min(LONG_CONTEXT_MAX, hi) // r)
        k = _integer(draw, b, gen, 0, k_hi, "ratio_multiple")
        j = _integer(draw, b, gen, -1, cfg.S + 1, "ratio_offset")
        return min(hi, max(0, k * r - 1 - j))
    if regime == "fp32_cut":
        # token 0's pos + 1 is k*r - 1 - j, with k*r a multiple of fp32's spacing 2^(p-23)
        # just past 2^p (p > 25: spacing >= 8): fp32 rounds pos + 1 up to k*r, so the
        # exact cut k - 1 and an fp32 cut k differ (the slot at the true cut is let in)
        r = cfg.cut
        p = _integer(draw, b, gen, *FP32_CUT_POWERS, "fp32_power")
        d = _integer(draw, b, gen, 0, 3, "fp32_multiple")
        j = _integer(draw, b, gen, 0, 2, "fp32_offset")
        spacing = 2 ** (p - 23)
        q = spacing // math.gcd(r, spacing)  # k a multiple of q: k*r a multiple of spacing
        k = q * (2**p // (q * r) + 1 + d)  # k*r > 2^p: spacing 2^(p-23) just below it
        return min(hi, max(0, k * r - 2 - j))
    lo, top = _range(regime, cfg, hi)
    return _integer(draw, b, gen, lo, top, "start_pos")


@st.composite
def start_positions(draw, cfg: Config, gen: torch.Generator, max_position: int | None = None,
                    far: bool = True) -> tuple[int, ...]:
    """One start position per batch, each from a drawn `START_REGIMES` regime (featured
    batches: Hypothesis; the rest: `gen`), so that `start_pos + S - 1 <= max_position`.
    far: allow the `FAR_REGIMES` (positions past 2^17, up to `max_position` or int32)."""
    hi = last_start(cfg, max_position)
    regimes = START_REGIMES if far else tuple(r for r in START_REGIMES if r not in FAR_REGIMES)
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
