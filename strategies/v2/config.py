"""The v2 configuration: v1's dimensions, budget and scale (`strategies.config.configs`),
plus what v2 adds: the compress ratio the kernel gets (an int, or None for no cut), the
ratio the producer cut the lists with, and the width `L >= IDX_TOPK` of `idx_topk`."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from sparse_attn_conformance.contracts.preconditions import Preconditions
from sparse_attn_conformance.strategies.config import DEFAULT_BUDGET
from sparse_attn_conformance.strategies.config import configs as v1_configs

#: The model's ratios (1: every position is a compressed entry; 4: CSA; 128: HCA).
MODEL_RATIOS = (1, 4, 128)
#: Extra unread columns of `idx_topk` past `IDX_TOPK` (upstream pads to a tile).
EXTRA_COLUMNS = (0, 1, 3, 16)


@dataclass(frozen=True)
class Config:
    """The shape and model parameters of one v2 call.

    ratio: `compress_ratio` as the kernel gets it (None: no in-kernel cut).
    cut: the ratio the producer used to build the compressed lists (`ratio` when it is an
        int; with None the caller pre-cut with it, as upstream's HCA layer does with 128).
    L: columns of `idx_topk` (`>= IDX_TOPK`; the rest are never read).
    """

    B: int
    S: int
    H: int
    D: int
    WIN: int
    IDX_TOPK: int
    BLOCK: int
    L: int
    ratio: int | None
    cut: int
    softmax_scale: float

    @property
    def TOPK(self) -> int:
        return self.WIN + self.IDX_TOPK

    @property
    def T(self) -> int:
        return self.B * self.S


def ratios() -> st.SearchStrategy[int]:
    """A compress ratio >= 1: the model's, or any up to 512."""
    return st.one_of(st.sampled_from(MODEL_RATIOS), st.integers(1, 512))


@st.composite
def configs(draw, pre: Preconditions = Preconditions(), budget: int = DEFAULT_BUDGET,
            min_S: int = 1, fixed: dict | None = None) -> Config:
    """A v2 `Config`: dimensions and scale from v1's `configs` (the kernel's dims, the work
    budget, at most one large dimension), then the ratio (None in about one draw in five),
    the producer's cut and the columns of `idx_topk`."""
    base = draw(v1_configs(pre, budget, min_S=min_S, fixed=fixed), label="dims")
    ratio = draw(st.one_of(st.none(), ratios()), label="compress_ratio")
    cut = ratio if ratio is not None else draw(ratios(), label="pre_cut_ratio")
    extra = draw(st.sampled_from(EXTRA_COLUMNS), label="extra_idx_columns")
    return Config(B=base.B, S=base.S, H=base.H, D=base.D, WIN=base.WIN, IDX_TOPK=base.IDX_TOPK,
                  BLOCK=base.BLOCK, L=base.IDX_TOPK + extra, ratio=ratio, cut=cut,
                  softmax_scale=base.softmax_scale)
