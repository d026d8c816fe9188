"""The numbers in a call: pool rows, queries, sinks and (for extreme values) the scale.

Value regimes (docs/contract.md section 5 states the domain a kernel must be exact in):

- "tame": rows from a normal, uniform-positive or small-integer distribution at a few
  scales, queries scaled so the logits spread from 0 to about 64;
- "onehot": every row is zero but for one large coordinate (its own, as far as D allows)
  and the logits are nearly equal, so every single live key moves its own output
  coordinate well past the tolerance while a token has fewer than ~200 live keys;
- "dominant": like "tame", then per token one live key (at a drawn row position: anywhere,
  first, last, at a tile edge) is made to carry most of the softmax weight;
- "extreme": rows and queries are small integers times powers of two up to the edge of the
  domain (logits and value sums near 2^120, or tiny), with a power-of-two scale, so every
  logit is exact in fp32 whatever the summation order and the comparison stays meaningful.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.contracts.v1 import DOMAIN_LIMIT_LOG2

#: Typical logit spread per example: tame to large (softmax nearly one-hot).
LOGIT_SCALES = (1.0, 0.0, 0.1, 4.0, 16.0, 64.0)
TAME_DISTS = ("normal", "small_ints", "positive")
REGIMES = ("tame", "onehot", "dominant", "extreme")
#: Sinks per head: finite ones near 0; some near the fp32 edge; some infinite; both.
SINK_REGIMES = ("finite", "edge", "with_inf", "extreme")
#: The regimes a kernel declaring `finite_sinks` (and the model's own sinks) gets.
FINITE_SINK_REGIMES = ("finite", "edge")


def fill_pool(gen: torch.Generator, n_blocks: int, block: int, D: int, scale: float,
              dist: str) -> torch.Tensor:
    """A `[n_blocks, block, D]` bf16 pool of rows drawn from `dist`."""
    shape = (n_blocks, block, D)
    if dist == "normal":
        rows = torch.randn(shape, generator=gen) * scale
    elif dist == "positive":
        rows = torch.rand(shape, generator=gen) * scale
    elif dist == "small_ints":
        # exact in bf16: differences between kernels are then rounding in the kernel only
        rows = torch.randint(-4, 5, shape, generator=gen).float() * scale
    elif dist == "onehot":
        # row i's large coordinate is i mod D (in physical order): distinct keys, distinct
        # coordinates, as far as D allows
        rows = torch.zeros(shape)
        n = n_blocks * block
        coord = (torch.arange(n) + int(torch.randint(0, max(D, 1), (1,), generator=gen))) % D
        sign = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1
        rows.view(n, D)[torch.arange(n), coord] = sign * scale
    else:
        raise ValueError(f"fill_pool: dist expected one of normal, positive, small_ints, "
                         f"onehot, got {dist!r}")
    return rows.to(torch.bfloat16)


def exact_pool(gen: torch.Generator, n_blocks: int, block: int, D: int, exp2: int) -> torch.Tensor:
    """Small integers in [-4, 4] times `2^exp2`: exact in bf16, products exact in fp32."""
    ints = torch.randint(-4, 5, (n_blocks, block, D), generator=gen).double()
    return (ints * 2.0**exp2).to(torch.bfloat16)


@st.composite
def value_regimes(draw, D: int, topk: int, scale: float, keep_scale: bool = False) -> dict:
    """How the rows, queries and scale of one case are drawn (see the module docstring).
    keep_scale: the extreme regime keeps `scale` (a given config) instead of drawing a
    power of two, and sizes q so that the domain's bound holds for it."""
    regime = draw(st.sampled_from(REGIMES), label="value_regime")
    spec = {"regime": regime}
    if regime in ("tame", "dominant"):
        spec["dist"] = draw(st.sampled_from(TAME_DISTS), label="value_dist")
        spec["kv_scale"] = draw(st.sampled_from((1.0, 0.25, 8.0)), label="kv_scale")
        spec["logit"] = draw(st.sampled_from(LOGIT_SCALES), label="logit_scale")
    elif regime == "onehot":
        spec["dist"] = "onehot"
        spec["kv_scale"] = draw(st.sampled_from((1.0, 8.0, 1000.0)), label="kv_scale")
        spec["logit"] = draw(st.sampled_from((0.0, 0.1, 0.5)), label="logit_scale")
    else:
        # the scale: a power of two (exact), zero or negative
        if keep_scale:
            spec["scale"] = scale
            s_exp = math.ceil(math.log2(abs(scale))) if scale else 0
        else:
            s_exp = draw(st.integers(-12, 12), label="scale_exp2")
            sign = draw(st.sampled_from((1.0, -1.0, 0.0)), label="scale_sign")
            spec["scale"] = sign * 2.0**s_exp
        # |v| * TOPK <= 2^L and sum_d |q k| * max(1, |scale|) <= 2^L (contract section 5)
        k_max = DOMAIN_LIMIT_LOG2 - 2 - math.ceil(math.log2(max(topk, 1)))
        k_exp = draw(st.one_of(st.sampled_from((k_max, 15, 16, 0)), st.integers(-40, k_max)),
                     label="kv_exp2")
        # and q itself finite in bf16 (ints up to 4 = 2^2 times 2^125 is below 2^128)
        q_max = min(125, DOMAIN_LIMIT_LOG2 - 4 - math.ceil(math.log2(max(D, 1))) - k_exp
                    - max(0, s_exp if spec["scale"] else 0))
        spec["q_exp"] = draw(st.one_of(st.just(q_max), st.integers(min(-40, q_max), q_max)),
                             label="q_exp2")
        spec["k_exp"] = k_exp
    return spec


def queries(gen: torch.Generator, shape, spec: dict, scale: float, D: int,
            kv_scale: float) -> torch.Tensor:
    """`q` `[B, S, H, D]` bf16 for a value regime."""
    if spec["regime"] == "extreme":
        ints = torch.randint(-4, 5, shape, generator=gen).double()
        return (ints * 2.0 ** spec["q_exp"]).to(torch.bfloat16)
    # scaled so that the logits' spread is about `logit` whatever D and the kv scale
    q_scale = spec["logit"] / max(abs(scale) * kv_scale * D**0.5, 1e-6)
    return (torch.randn(shape, generator=gen) * q_scale).to(torch.bfloat16)


def sinks(gen: torch.Generator, H: int, regime: str) -> torch.Tensor:
    """`attn_sink` `[H]` fp32: finite ones around 0; with `edge`, some heads near the fp32
    edge (+-1e30, +-3e38, +-88); with `with_inf`, some at +-inf; with `extreme`, both."""
    finite = torch.randn(H, generator=gen) * 2.0
    if regime == "finite":
        return finite
    edge = [1e30, -1e30, 3e38, -3e38, 88.0, -88.0]
    pool = {"edge": edge, "with_inf": [float("inf"), float("-inf")],
            "extreme": edge + [float("inf"), float("-inf")]}[regime]
    kind = torch.randint(0, len(pool) + 1, (H,), generator=gen).tolist()
    out = [pool[k - 1] if k else float(f) for k, f in zip(kind, finite.tolist(), strict=True)]
    return torch.tensor(out, dtype=torch.float32)


#: How the dominant key's row position is chosen, per token.
DOMINANT_PLACES = ("anywhere", "first", "last", "tile_edge", "largest_index")


def dominant_positions(gen: torch.Generator, live: torch.Tensor,
                       rows: torch.Tensor) -> torch.Tensor:
    """Per token, the row position `[B, S]` of its dominant key (-1: no live entry).

    Positions are drawn anywhere among the live ones, or at the first, the last, the one
    nearest a tile edge `t*k - 1` or `t*k` for a random tile size `t`, or the largest index
    value (the furthest slot): each bug that loses one key at one position is hit on some
    token of some example.
    """
    B, S, T = live.shape
    out = torch.full((B, S), -1, dtype=torch.int64)
    pos = torch.arange(T)
    for b in range(B):
        for s in range(S):
            where = pos[live[b, s]]
            if where.numel() == 0:
                continue
            place = DOMINANT_PLACES[int(torch.randint(len(DOMINANT_PLACES), (1,), generator=gen))]
            if place == "first":
                p = where[0]
            elif place == "last":
                p = where[-1]
            elif place == "tile_edge":
                t = int(torch.randint(2, 300, (1,), generator=gen))
                k = int(torch.randint(1, max(2, T // t + 1), (1,), generator=gen))
                edge = k * t - int(torch.randint(0, 2, (1,), generator=gen))
                p = where[(where - edge).abs().argmin()]
            elif place == "largest_index":
                p = where[rows[b, s, where].argmax()]
            else:
                p = where[int(torch.randint(where.numel(), (1,), generator=gen))]
            out[b, s] = int(p)
    return out


def make_dominant(q: torch.Tensor, key_rows: torch.Tensor, live: torch.Tensor,
                  where: torch.Tensor, scale: float, gaps: torch.Tensor) -> torch.Tensor:
    """Queries under which each token's key at row position `where[b, s]` out-scores every
    other live key of the token by about `gaps[b, s]` (logits), in every head.

    `key_rows` `[B, S, TOPK, D]` are the rows the entries address (the dominant rows must
    already be boosted so that `|k_dom|^2` exceeds every `<k_dom, k_j>`); a token whose
    dominant row cannot out-score the others keeps its query.
    """
    out = q.clone()
    if scale == 0:
        return out
    B, S, H, D = q.shape
    for b in range(B):
        for s in range(S):
            p = int(where[b, s])
            if p < 0:
                continue
            k = key_rows[b, s].double()
            kd = k[p]
            dots = k[live[b, s]] @ kd
            self_dot = float(kd @ kd)
            others = dots[dots < self_dot]  # duplicates of the dominant row tie with it
            margin = self_dot - (float(others.max()) if others.numel() else 0.0)
            if margin <= self_dot / 8:  # a near tie: the logits would have to be huge
                continue
            beta = float(gaps[b, s]) / (scale * margin)
            head = torch.linspace(0.75, 1.25, H, dtype=torch.float64)[:, None]
            out[b, s] = (beta * head * kd[None, :]).to(torch.bfloat16)
    return out
