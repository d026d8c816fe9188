"""Configuration draws: the shape and model parameters of one call.

Every dimension is drawn from its whole contract range, not from a list: small values most
of the time (cheap, and what Hypothesis shrinks towards), and at most one dimension large,
up to `LIMITS`. Values are biased towards the sizes tiled kernels get wrong: primes,
`2^k - 1`, `2^k + 1`, `576`. A per-example work budget bounds the cost of the reference
(`cost`), so a large dimension makes the others small instead of making the example slow.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from sparse_attn_conformance.contracts.v1 import DIMS, Preconditions

#: Largest value drawn per dimension (the contract has no upper bound; these reach well
#: beyond the model's B=64, S=2, H=64, D=512, WIN=128, IDX_TOPK=512, BLOCK=128).
LIMITS = {"B": 512, "S": 32, "H": 256, "D": 1024, "WIN": 1024, "IDX_TOPK": 4096, "BLOCK": 1024}
#: Largest "small" value per dimension: what a dimension takes when it is not the large one.
SMALL = {"B": 8, "S": 4, "H": 8, "D": 64, "WIN": 32, "IDX_TOPK": 32, "BLOCK": 16}
#: Smallest value per dimension (IDX_TOPK = 0 is a window-only call).
LOWEST = {"B": 1, "S": 1, "H": 1, "D": 1, "WIN": 1, "IDX_TOPK": 0, "BLOCK": 1}
#: Order in which dimensions are drawn: S before WIN, so that WIN >= S can be asked for.
ORDER = ("B", "S", "H", "D", "WIN", "IDX_TOPK", "BLOCK")
assert set(ORDER) == set(DIMS) == set(LIMITS)

#: Compress ratios of the model (0 is window-only SWA, 4 CSA, 128 HCA), besides any other.
MODEL_RATIOS = (0, 4, 128)
#: Factors of `D**-0.5` for the scale, zero and negative ones included (contract section 1
#: allows any finite scale).
SCALE_FACTORS = (1.0, 0.5, 2.0, 0.125, 3.0, 0.0, -1.0, -0.25)
#: The default work budget (reference cost units, about a nanosecond each on the 2-core
#: machine): the dev profile's.
DEFAULT_BUDGET = 2**23


def _special(lo: int, hi: int) -> list[int]:
    """Sizes that tiled kernels get wrong, within `[lo, hi]`."""
    vals = {576, 96, 100, 144, 192, 320, 1000}
    for k in range(1, 13):
        vals |= {2**k - 1, 2**k, 2**k + 1}
    vals |= {3, 5, 7, 11, 13, 17, 31, 37, 61, 67, 97, 101, 127, 131, 251, 257, 509, 521, 1021}
    return sorted(v for v in vals if lo <= v <= hi)


@dataclass(frozen=True)
class Config:
    """The shape and model parameters of one call."""

    B: int
    S: int
    H: int
    D: int
    WIN: int
    IDX_TOPK: int
    BLOCK: int
    ratio: int
    softmax_scale: float
    #: per-tensor FP8 pools' scales `(ori, cmp)`, set once a case is in such a format: a
    #: case drawn at this config (to be mixed into one call with the first) shares them
    pool_scales: tuple[float, float] | None = None

    @property
    def TOPK(self) -> int:
        return self.WIN + self.IDX_TOPK


def cost(d: dict) -> int:
    """The work of one example with dims `d` (missing dims at their lowest): the scores
    `B*S*H*TOPK*D`, the pools (about `B*D*(2*TOPK + 5*BLOCK)`) and the per-token work of
    building index rows and checking them (`B*S*(50*TOPK + 20000)`)."""
    g = {k: d.get(k, LOWEST[k]) for k in ORDER}
    topk = max(1, g["WIN"] + g["IDX_TOPK"])
    tokens = g["B"] * g["S"]
    return (tokens * g["H"] * topk * g["D"] + g["B"] * g["D"] * (2 * topk + 5 * g["BLOCK"])
            + tokens * (50 * topk + 20000))


def _fits(d: dict, name: str, value: int, budget: int) -> bool:
    return cost({**d, name: value}) <= budget


def _largest_fitting(d: dict, name: str, lo: int, hi: int, budget: int) -> int:
    """The largest value in `[lo, hi]` of `name` that keeps `d` within budget (`lo - 1`
    if none does)."""
    if not _fits(d, name, lo, budget):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _fits(d, name, mid, budget) else (lo, mid - 1)
    return lo


def dim_values(name: str, pre: Preconditions) -> tuple[int, ...] | None:
    """The values a kernel declared for a dimension, or None (the whole range)."""
    values = pre.dims.get(name)
    return tuple(values) if values is not None else None


def _dim(draw, name: str, d: dict, pre: Preconditions, large: bool, budget: int,
         lo: int, cap: int) -> int:
    declared = dim_values(name, pre)
    if declared is not None:
        allowed = sorted(v for v in declared if lo <= v <= cap)
        if not allowed:
            raise ValueError(f"configs: dimension {name} needs a value in [{lo}, {cap}], but "
                             f"the kernel's preconditions allow only {declared}")
        fitting = [v for v in allowed if _fits(d, name, v, budget)] or allowed[:1]
        return draw(st.sampled_from(fitting), label=name)
    small_hi = min(cap, max(lo, SMALL[name]))
    if large and cap > small_hi:
        hi = _largest_fitting(d, name, small_hi + 1, min(cap, LIMITS[name]), budget)
        if hi > small_hi:
            # a size tiled kernels get wrong, any size, or the largest the budget allows
            return draw(st.one_of(st.sampled_from(_special(small_hi + 1, hi) or [hi]),
                                  st.integers(small_hi + 1, hi), st.just(hi)), label=name)
    hi = max(lo, _largest_fitting(d, name, lo, small_hi, budget))
    return draw(st.integers(lo, hi), label=name)


@st.composite
def configs(draw, pre: Preconditions = Preconditions(), budget: int = DEFAULT_BUDGET,
            min_S: int = 1, win_at_least_S: bool = False, fixed: dict | None = None) -> Config:
    """A `Config` within the kernel's declared dims and the work budget.

    At most one dimension is drawn large (beyond `SMALL`); it is drawn first, so the others
    shrink to fit the budget around it. `min_S`: draw `S >= min_S` (properties that need
    several tokens ask for it instead of rejecting). `win_at_least_S`: `WIN >= S` (an
    unwrapped ring needs it). `fixed`: dims taken as given (the model's attention shape).

    The scale is `D**-0.5` times a factor from `SCALE_FACTORS` (zero and negative ones
    included), so a kernel that uses its own `1/sqrt(D)` is wrong on most examples.
    """
    fixed = dict(fixed or {})
    free = [n for n in ORDER if n not in fixed and dim_values(n, pre) is None]
    large = draw(st.sampled_from([None, *free]), label="large_dim") if free else None
    d = dict(fixed)
    order = ([large] if large else []) + [n for n in ORDER if n != large]
    for name in order:
        if name in d:
            continue
        lo, cap = (min_S if name == "S" else LOWEST[name]), LIMITS[name]
        if name == "WIN" and win_at_least_S:
            lo = d.get("S", min_S)
        if name == "S" and win_at_least_S and "WIN" in d:
            cap = d["WIN"]  # the large WIN was drawn first
        d[name] = _dim(draw, name, d, pre, name == large, budget, lo, cap)
    ratio = draw(st.one_of(st.sampled_from(MODEL_RATIOS), st.integers(1, 512)), label="ratio")
    factor = draw(st.sampled_from(SCALE_FACTORS), label="scale_factor")
    return Config(ratio=ratio, softmax_scale=factor * d["D"] ** -0.5, **d)
